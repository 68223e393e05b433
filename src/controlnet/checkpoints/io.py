"""Reading and writing tensors safely: safetensors, or `torch.load(weights_only=True)`; never pickle.

Every failure becomes a `CheckpointError` naming the file and what is wrong with it, instead of a
stack trace from inside safetensors or torch.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from controlnet.errors import CheckpointError
from controlnet.files import atomic_file

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")


def read_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state dict, metadata) of one weights file. A nested `state_dict` entry is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (an interrupted download or copy?)")
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path), {}


def _looks_like_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: not a readable safetensors file ({size} bytes): {exc}. "
            "If it was downloaded or copied, the file is probably truncated; fetch it again."
        ) from None
    return tensors, metadata


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    if not zipfile.is_zipfile(path) and not _is_legacy_torch(path):
        raise CheckpointError(
            f"{path}: neither a safetensors file nor a PyTorch checkpoint (or it is truncated); "
            "expected .safetensors, .pth, .ckpt or .bin"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds more than tensors ({str(exc).splitlines()[0][:200]}). "
            "Untrusted pickles can run code, so only weights_only loading is allowed. Convert the file to "
            "safetensors in a trusted environment, or ask its author for a .safetensors version."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: could not read this PyTorch checkpoint (truncated or corrupt?): {exc}") from None
    return _unwrap_state_dict(obj, path)


def _is_legacy_torch(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02"  # protocol-2 pickle (pre-1.6 torch.save)


def _unwrap_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    while isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a dictionary of tensors")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path}: holds no tensors")
    return tensors


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """A NaN or infinite weight makes every output NaN: refuse it here, naming the tensor."""
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"{source}: tensor {name!r} holds {bad} NaN or infinite value(s) of {t.numel()}: the file is "
                "corrupt or was saved from a diverged training run; use another copy or an earlier checkpoint"
            )


def save_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None,
                     *, destination: str | os.PathLike | None = None) -> None:
    """Write a safetensors file in place (callers wrap it in `atomic_file`, and name the final
    `destination` for messages). A full disk is an OSError, as for every other writer."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta)
    except SafetensorError as exc:
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(destination or path)) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors creates files private (0600); give them the usual permissions


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write atomically (see `atomic_file`)."""
    with atomic_file(path) as tmp:
        save_safetensors(tensors, tmp, metadata, destination=path)
