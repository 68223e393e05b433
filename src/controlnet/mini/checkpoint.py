"""Atomic files: a stage killed mid-write leaves the previous checkpoint intact, never half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch


def atomic_save(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_json(obj, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def load(path: str | Path):
    return torch.load(path, map_location="cpu", weights_only=False)
