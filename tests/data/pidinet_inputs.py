"""Seeded inputs of the PiDiNet equality test, shared by the test and by make_pidinet_reference.py.

Both the weights and the pictures are made from seeds here, so the repository stores only the
reference maps (pidinet_reference.npz), not a 2.8 MB weight file.
"""

from __future__ import annotations

import numpy as np
import torch

WEIGHT_SEED = 22
PICTURE_SEEDS = (101, 202, 303)
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))  # (h, w): multiples of 64, so no resize on either side


def random_pidinet_state(shapes: dict[str, tuple[int, ...]], seed: int = WEIGHT_SEED) -> dict[str, torch.Tensor]:
    """Random tensors for each parameter, in sorted name order from one torch generator.

    Weights are N(0, 1) scaled by 1/sqrt(fan in), biases N(0, 0.1); the 4→1 classifier's weights
    are scaled 8× more, so the fused map spans most of 0..1 (a fresh initialisation sits near 0.5)
    while the network stays well conditioned (larger gains make float rounding grow through the
    16 blocks: then even two torch versions of the reference differ by 2e-5).
    """
    state = random_state(shapes, seed)
    state["classifier.weight"] = state["classifier.weight"] * 8.0
    return state


def random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """N(0, 1) tensors in sorted name order from one torch generator; weights scaled by 1/sqrt(fan in), biases by 0.1."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        values = torch.randn(shape, generator=generator, dtype=torch.float32)
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 0
        state[name] = values * (1.0 / fan_in**0.5 if fan_in else 0.1)
    return state


def published_layout(state: dict[str, torch.Tensor]) -> dict:
    """The layout of lllyasviel/Annotators' table5_pidinet.pth: {"state_dict": {"module.<name>": tensor}}."""
    return {"state_dict": {f"module.{k}": v for k, v in state.items()}}


def picture(seed: int, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 picture of random filled shapes on a colour gradient, with mild noise."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    ramp = np.linspace(0, 1, w)[None, :, None] * rng.uniform(0, 255, 3) + rng.uniform(0, 128, 3)
    image = np.broadcast_to(ramp, (h, w, 3)).clip(0, 255).astype(np.uint8).copy()
    for _ in range(int(rng.integers(5, 9))):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if rng.random() < 0.5:
            axes = (int(rng.integers(8, w // 3)), int(rng.integers(8, h // 3)))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            corner = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.rectangle(image, centre, corner, colour, -1)
    noise = rng.normal(0, 6, image.shape)
    return (image + noise).clip(0, 255).astype(np.uint8)
