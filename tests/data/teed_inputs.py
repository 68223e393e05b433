"""Seeded inputs of the TEED equality test, shared by the test and by make_teed_reference.py.

Weights and pictures are made from seeds (the pictures by pidinet_inputs.picture, with seeds of
their own), so the repository stores only the reference maps (teed_reference.npz).
"""

from __future__ import annotations

import torch
from pidinet_inputs import random_state

WEIGHT_SEED = 7
PICTURE_SEEDS = (404, 505, 606)
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))  # (h, w): multiples of 64, so no resize on either side


def random_teed_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """pidinet_inputs.random_state, with the first convolution scaled by 1/16 (TEED reads pixels in
    0..255) and the upsampling weights by 4, so the mean logit spans about -2..1.3: the sigmoid map
    then covers most of 0..1 (unscaled, it sits in a few grey levels around 0.5 and tests little)."""
    state = random_state(shapes, seed)
    state["block_1.conv1.weight"] = state["block_1.conv1.weight"] / 16.0
    for name in state:
        if name.startswith("up_block") and name.endswith("weight"):
            state[name] = state[name] * 4.0
    return state
