"""Seeded inputs of the seg_ufade20k (UniFormer UperNet) equality test, shared by the test and by
make_uniformer_reference.py.

The network is upernet_global_small.py's (UniFormer with global attention, UperNet decode head, FCN
auxiliary head) at a reduced width and depth, so its random weights come from a seed and the test
runs in seconds; the repository stores only the reference outputs (uniformer_reference.npz). Heads
stay 64 channels wide, as in the published config.
"""

from __future__ import annotations

import torch
from normal_bae_inputs import random_normal_bae_state

WEIGHT_SEED = 41
PICTURE_SEEDS = (1212, 2323, 3434)
# (h, w), run at detect resolution = the short side: neither side resizes before the network; mmseg then
# scales each to short side 512; the last is not a multiple of 64, so A1111 edge-pads it first
PICTURE_SIZES = ((128, 192), (192, 128), (100, 150))
REDUCED = {"dims": (16, 32, 64, 128), "depths": (1, 1, 2, 2), "channels": 32, "aux_channels": 16}
LOGIT_SAMPLE = (slice(None), slice(None, None, 15), slice(None, None, 4), slice(None, None, 4))  # stored subset
CLASSES = 150


def original_name(name: str) -> str:
    """Our module's name of a head tensor -> mmseg's (`batch_norm` -> `bn`, `classifier` -> `conv_seg`)."""
    if name.startswith("backbone."):
        return name
    return name.replace(".batch_norm.", ".bn.").replace(".classifier.", ".conv_seg.")


def random_uniformer_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Seeded tensors for mmseg's names (normal_bae_inputs' recipe: plausible batch and layer norms)."""
    return random_normal_bae_state(shapes, seed)


def published_layout(state: dict[str, torch.Tensor]) -> dict:
    """The layout of upernet_global_small.pth: an mmcv checkpoint {"meta": {...}, "state_dict": {name: tensor}}."""
    meta = {"mmseg_version": "0.11.0", "CLASSES": tuple(f"class{i}" for i in range(CLASSES)),
            "PALETTE": [[i, i, i] for i in range(CLASSES)], "iter": 160000, "epoch": 1}
    return {"meta": meta, "state_dict": dict(state)}
