"""The build's own state files, written atomically: a stage killed mid-write leaves the previous
checkpoint intact, never half a file. Read back with `weights_only=True` like any other file."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from controlnet.files import atomic_file


def atomic_save(obj, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_json(obj, path: str | Path) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def load(path: str | Path):
    return torch.load(path, map_location="cpu", weights_only=True)
