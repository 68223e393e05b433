"""Seeded inputs of the manga line equality test, shared by the test and by make_manga_line_reference.py.

Weights and pictures are made from seeds (the pictures by pidinet_inputs.picture, with seeds of
their own), so the repository stores only the reference maps (manga_line_reference.npz), not a
172 MB weight file.
"""

from __future__ import annotations

import torch
from pidinet_inputs import random_state

WEIGHT_SEED = 10
PICTURE_SEEDS = (121, 232, 343)
# (h, w): multiples of 64, so no resize or pad on either side; small, as the network costs ~1 GMAC per 1,000 pixels
PICTURE_SIZES = ((64, 128), (128, 64), (64, 64))
RAW_STRIDE = 2  # the reference keeps every 2nd row and column of the raw network output (small test data)
FIRST_NORM = "block0.model.0.conv1.model.0"  # the batch norm reading the grey pixels
FIRST_SHORTCUT = "block0.model.0.shortcut.model.0.weight"  # the 1×1 projection of the grey pixels
OUTPUT_CONV = "conv15.model.2"
OUTPUT_GAIN = 1000.0  # the 1×1 convolution's output is about -0.17 ± 0.04 before this
OUTPUT_BIAS = 300.0


def random_manga_line_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """pidinet_inputs.random_state for the weights, with batch-norm statistics an eval-mode network can use:
    scales 1 ± 0.1, means ±0.1, variances 0.5..1.5 (the first norm: mean 128, sd 64, as pixels are), the
    pixels' shortcut scaled by 1/128, and the output convolution scaled (×OUTPUT_GAIN, bias OUTPUT_BIAS) so the
    output spreads over about 128 ± 40 and the map over most of 0..255."""
    floats = {k: s for k, s in shapes.items() if not k.endswith("num_batches_tracked")}
    state = random_state(floats, seed)
    generator = torch.Generator().manual_seed(seed + 1)
    for name in sorted(state):
        if name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shapes[name], generator=generator)
        elif name.endswith("weight") and len(shapes[name]) == 1:  # batch-norm scale
            state[name] = 1.0 + state[name]
        elif name.endswith("weight"):  # convolutions: halved, so 40 residual blocks add up to activations ~1
            state[name] = state[name] * 0.5
    state[f"{FIRST_NORM}.running_mean"] = torch.full(shapes[f"{FIRST_NORM}.running_mean"], 128.0)
    state[f"{FIRST_NORM}.running_var"] = torch.full(shapes[f"{FIRST_NORM}.running_var"], 64.0**2)
    state[FIRST_SHORTCUT] = state[FIRST_SHORTCUT] / 128.0
    state[f"{OUTPUT_CONV}.weight"] = state[f"{OUTPUT_CONV}.weight"] * OUTPUT_GAIN
    state[f"{OUTPUT_CONV}.bias"] = torch.full(shapes[f"{OUTPUT_CONV}.bias"], OUTPUT_BIAS)
    for name in shapes:
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(0, dtype=torch.int64)
    return state
