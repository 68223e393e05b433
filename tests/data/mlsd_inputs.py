"""Seeded inputs of the M-LSD equality test, shared by the test and by make_mlsd_reference.py.

Weights and pictures come from seeds (the pictures are PiDiNet's generator), so the repository
stores only the reference maps (mlsd_reference.npz), not a 6 MB weight file.
"""

from __future__ import annotations

import numpy as np
import torch
from pidinet_inputs import picture  # noqa: F401  (the same seeded pictures generator)

WEIGHT_SEED = 23
TINY_SEED = 24  # mlsd_tiny_512_fp32.pth
PICTURE_SEEDS = (404, 505, 606)
PICTURE_SIZES = ((256, 384), (384, 256), (256, 256))  # (h, w): the detector runs at the image size


def random_mlsd_state(reference: dict[str, torch.Tensor], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Random tensors in sorted name order from one generator, shaped like `reference`.

    Conv weights N(0, 1/fan in), BN scales 1 ± 0.1, running variances in 0.5..1.5, other vectors
    N(0, 0.1); the batch counters are kept as they are.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(reference):
        like = reference[name]
        if not like.is_floating_point():
            state[name] = like.clone()
            continue
        values = torch.randn(like.shape, generator=generator, dtype=torch.float32)
        if like.dim() > 1:
            state[name] = values / int(np.prod(like.shape[1:])) ** 0.5
        elif name.endswith("running_var"):
            state[name] = 1.0 + 0.5 * torch.tanh(values)
        elif name.endswith("weight"):
            state[name] = 1.0 + 0.1 * values
        else:
            state[name] = 0.1 * values
    return state
