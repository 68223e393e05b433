"""Seeded inputs of the LeReS / LeReS++ equality test, shared by the test and by make_leres_reference.py.

The networks are REDUCED (the published ResNeXt-101 32x8d, 256/512-wide decoder and 64-wide merge U-Net
would make each boosted map take minutes on a CPU): ResNeXt stages of 2 blocks in 8 groups of 8
(published 3/4/23/3 blocks, 32 groups of 8), decoder widths 32/64 (published 256/512), merge U-Net
base width 8 (published 64) with all ten levels. Every code path is the published one; only sizes
differ, and our loader reads them from the file. Weights and pictures come from seeds, so the
repository stores only the reference outputs (leres_reference.npz).
"""

from __future__ import annotations

import numpy as np
import torch
from normal_bae_inputs import random_normal_bae_state

WEIGHT_SEED = 47
MERGE_SEED = 48
BLOCKS, GROUPS, GROUP_WIDTH, MID, TOP = (2, 2, 2, 2), 8, 8, 32, 64
MERGE_WIDTH = 8
PICTURE_SEEDS = (1401, 1502, 1708)
PICTURE_SIZES = ((192, 256), (256, 192), (448, 448))  # (h, w): multiples of 64, so neither side resizes or pads
PATCHED = 2  # the picture made by clustered_picture (4 local patches in LeReS++); the others by pidinet_inputs.picture
THRESHOLDS = ((0, 0), (20, 0), (10, 30))  # (remove near %, remove background %) per picture


def random_leres_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """N(0, 1/fan-in) weights, batch norms near identity with positive variances (normal_bae_inputs' recipe)."""
    return random_normal_bae_state(shapes, seed)


def published_layout(state: dict[str, torch.Tensor]) -> dict:
    """The layout LeresDetector reads from res101.pth: {"depth_model": {"module.<name>": tensor}}."""
    return {"depth_model": {f"module.{k}": v for k, v in state.items()}}


def clustered_picture(seed: int, size: tuple[int, int]) -> np.ndarray:
    """A smooth colour ramp with a few shapes gathered in one corner: LeReS++'s resolution search stops at
    448 px and only the patches around the shapes are dense enough to be refined, so the local
    refinement runs on a few patches (each costs two LeReS runs and two merges)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 128, 3)
    image = np.broadcast_to(ramp, (h, w, 3)).clip(0, 255).astype(np.uint8).copy()
    for _ in range(int(rng.integers(3, 6))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(w // 12, w // 6)), int(rng.integers(h // 12, h // 6)))
        axes = (int(rng.integers(3, w // 24)), int(rng.integers(3, h // 24)))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
    return image


def leres_picture(index: int) -> np.ndarray:
    """The index-th test picture."""
    from pidinet_inputs import picture

    make = clustered_picture if index == PATCHED else picture
    return make(PICTURE_SEEDS[index], PICTURE_SIZES[index])
