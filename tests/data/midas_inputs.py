"""Seeded inputs of the MiDaS (depth_midas, normal_midas) equality test, shared by the test and by
make_midas_reference.py.

The weights are random tensors made from a seed for the parameter names and shapes of
controlnet_aux's own (reduced) DPT-Hybrid, which make_midas_reference.py stores in midas_reference.npz;
the pictures come from pidinet_inputs.picture. The repository stores only the reference outputs.
"""

from __future__ import annotations

import torch
from pidinet_inputs import random_state

WEIGHT_SEED = 501
PICTURE_SEEDS = (707, 808, 909)
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))  # (h, w): multiples of 64, so no resize on either side
BG_THRESHOLD = 0.4  # A1111's default for normal_midas (controlnet_aux's own default is 0.1)


def random_midas_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """pidinet_inputs.random_state, with the depth head's last bias set to 1 so that its final ReLU keeps
    most pixels (with a bias near 0 about half the map is clipped to 0 and the depth map tests little)."""
    state = random_state(shapes, seed)
    state["scratch.output_conv.4.bias"] = torch.ones_like(state["scratch.output_conv.4.bias"])
    return state
