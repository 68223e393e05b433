"""Bad weight files every learned detector must refuse in one clear error, never running with partly random
weights: a truncated file, another detector's file, a pickle that would run code on load (the contract every
detector keeps: tests/test_weight_file_contract.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.annotators import annotate
from controlnet.errors import InputError

IMAGE = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # any picture: the file fails first


def refuses_truncated(module: str, weights: Path, bad: Path, keep: int) -> None:
    bad.write_bytes(weights.read_bytes()[:keep])
    with pytest.raises(InputError, match="cannot read weights"):
        annotate(module, IMAGE, model=bad)


def refuses_hed_file(module: str, folder: Path, family: str) -> None:
    from controlnet.annotators.hed_network import ControlNetHED

    hed = folder / "ControlNetHED.pth"
    torch.save(ControlNetHED().state_dict(), hed)
    with pytest.raises(InputError, match=f"not a {family}"):
        annotate(module, IMAGE, model=hed)


def refuses_pickle(module: str, evil: Path, wrap: str | None = None) -> None:
    """`wrap`: the key a checkpoint nests its state dict under (PiDiNet's "state_dict")."""
    tensors = {"x": torch.zeros(1)}
    payload = {wrap: tensors} if wrap else dict(tensors)
    torch.save({**payload, "note": argparse.Namespace(code="would run on load")}, evil)
    with pytest.raises(InputError, match="not unpickled"):
        annotate(module, IMAGE, model=evil)
