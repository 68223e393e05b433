"""Devices by name, checked before any model is loaded: a missing GPU is one clear line, not a
traceback from deep inside torch."""

from __future__ import annotations

import torch

from controlnet.errors import InputError


def check_device(device) -> torch.device:
    """A torch device this machine has, or an `InputError` saying which one is missing (before any
    model is loaded, not as a traceback deep inside torch)."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise InputError(f"device {device} is not available: this torch has no CUDA GPU "
                             f"(torch {torch.__version__}); use device cpu")
        if device.index is not None and device.index >= count:
            raise InputError(f"device {device} is not available: this machine has {count} CUDA device(s)")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise InputError(f"device {device} is not available on this machine; use device cpu")
    elif device.type == "meta":
        raise InputError("device meta holds no data, so nothing can be computed on it; use cpu, cuda, cuda:N or mps")
    return device
