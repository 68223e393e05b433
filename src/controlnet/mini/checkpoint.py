"""The build's checkpoints, written atomically: a stage killed mid-write leaves the previous
checkpoint intact, never half a file. Read back with `weights_only=True` like any other file."""

from __future__ import annotations

from pathlib import Path

import torch

from controlnet.files import atomic_file


def atomic_save(obj, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def load(path: str | Path):
    return torch.load(path, map_location="cpu", weights_only=True)
