"""Seeded inputs of the NormalBAE equality test, shared by the test and by make_normal_bae_reference.py.

Weights and pictures are made from seeds (the pictures by pidinet_inputs.picture, with seeds of
their own), so the repository stores only the reference outputs (normal_bae_reference.npz), not a
290 MB weight file.
"""

from __future__ import annotations

import torch
from pidinet_inputs import random_state

WEIGHT_SEED = 31
PICTURE_SEEDS = (707, 808, 909)
PICTURE_SIZES = ((64, 128), (128, 64), (64, 64))  # (h, w): multiples of 64, so no resize or padding on either side


def random_normal_bae_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """pidinet_inputs.random_state, with batch norms made plausible (scale 1 ± 0.1, positive running
    variance 1 ± 0.1, as a trained network has: a negative variance would give NaN) and their
    batch counters zero."""
    state = random_state(shapes, seed)
    for name in state:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.long)
        elif name.endswith("running_var") or (name.endswith(".weight") and state[name].dim() == 1):
            state[name] = 1.0 + state[name].abs() if name.endswith("running_var") else 1.0 + state[name]
    return state


def published_layout(state: dict[str, torch.Tensor]) -> dict:
    """The layout of lllyasviel/Annotators' scannet.pt: {"model": {"module.<name>": tensor}} (saved from DataParallel)."""
    return {"model": {f"module.{k}": v for k, v in state.items()}}
