"""Floating-point types by any usual spelling: `fp16`, `float16`, `half`, `torch.float16`, a torch dtype.

One table for every entry point (loading and saving checkpoints, pipelines, training precision).
"""

from __future__ import annotations

import torch

from controlnet.errors import InputError

_BY_NAME = {
    torch.float32: ("fp32", "float32", "float", "full", "32"),
    torch.float16: ("fp16", "float16", "half", "16"),
    torch.bfloat16: ("bf16", "bfloat16"),
}
DTYPES = {name: dtype for dtype, names in _BY_NAME.items() for name in names}
SHORT_NAMES = ("fp32", "fp16", "bf16")


def parse_dtype(dtype, what: str = "dtype") -> torch.dtype | None:
    """A torch floating dtype for `dtype` (None stays None)."""
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in _BY_NAME:
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in DTYPES:
        raise InputError(f"unknown {what} {dtype!r}; use one of {', '.join(SHORT_NAMES)} (or float32, float16, bfloat16)")
    return DTYPES[key]


def short_name(dtype: torch.dtype) -> str:
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]
