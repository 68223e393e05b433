"""Seeded inputs of the ZoeDepth (depth_zoe) equality test, shared by the test and make_zoe_depth_reference.py.

The weights are random tensors made from a seed (pidinet_inputs.random_state) for the parameter names and
shapes of controlnet_aux's own (reduced) ZoeDepth, which make_zoe_depth_reference.py stores in
zoe_depth_reference.npz; the pictures come from pidinet_inputs.picture.
"""

from __future__ import annotations

WEIGHT_SEED = 1212
PICTURE_SEEDS = (31, 47, 59)
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))  # (h, w): multiples of 64, so no resize to the detect size
BUFFERS = ("conditional_log_binomial.log_binomial_transform.k_idx", "conditional_log_binomial.log_binomial_transform.K_minus_1")


def random_zoe_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict:
    """pidinet_inputs.random_state for the parameters; the log-binomial's two constant buffers (stored in the
    published file: bin indices 0..n-1 and n-1) keep their values, as the model computes them."""
    import torch
    from pidinet_inputs import random_state

    state = random_state({k: s for k, s in shapes.items() if k not in BUFFERS}, seed)
    bins = shapes[BUFFERS[0]][1]
    state[BUFFERS[0]] = torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1)
    state[BUFFERS[1]] = torch.full((1, 1, 1, 1), bins - 1.0)
    return state
