"""Seeded inputs of the lineart_anime equality test, shared by the test and by make_lineart_anime_reference.py.

Weights and pictures are made from seeds (the pictures by pidinet_inputs.picture, with seeds of
their own), so the repository stores only the reference maps (lineart_anime_reference.npz), not a
218 MB weight file.
"""

from __future__ import annotations

import torch
from pidinet_inputs import random_state

WEIGHT_SEED = 8
PICTURE_SEEDS = (707, 808, 909)
# (h, w): multiples of 64 (neither side resizes before the network), each stretched to 256×256
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))
RAW_STRIDE = 8  # the reference keeps every 8th row and column of the raw network output (small test data)
OUTPUT_WEIGHT = "model.model.3.weight"  # the last transposed convolution, before tanh


def random_lineart_anime_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """pidinet_inputs.random_state with the last transposed convolution scaled by 1/8, so the tanh
    output spans -1..1 without saturating (unscaled, most pixels sit at ±1 and test little)."""
    state = random_state(shapes, seed)
    state[OUTPUT_WEIGHT] = state[OUTPUT_WEIGHT] / 8.0
    return state


def published_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Anime2Sketch's netG.pth: a plain state dict saved from DataParallel ("module." prefixes)."""
    return {f"module.{k}": v for k, v in state.items()}
