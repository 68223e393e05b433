"""Content shuffle: the image warped by a smooth random flow (control_v11e_sd15_shuffle).

Same noise and warp as ControlNet 1.1's `ContentShuffleDetector`; `RandomState(seed)` draws the same
numbers as the original's `np.random.seed(seed)`, so a seed reproduces its maps.
"""

from __future__ import annotations

import cv2
import numpy as np

from .registry import Param, register


def noise_disk(h: int, w: int, cell: int, rng: np.random.RandomState) -> np.ndarray:
    """Smooth noise in [0, 1], shape (h, w, 1): coarse uniform noise upsampled with INTER_CUBIC."""
    coarse = rng.uniform(low=0, high=1, size=(h // cell + 2, w // cell + 2, 1))
    fine = cv2.resize(coarse, (w + 2 * cell, h + 2 * cell), interpolation=cv2.INTER_CUBIC)
    fine = fine[cell : cell + h, cell : cell + w]
    fine = fine - fine.min()
    fine = fine / max(float(fine.max()), 1e-12)
    return fine[:, :, None]


@register(
    "shuffle",
    feeds="shuffle (control_v11e_sd15_shuffle: needs global average pooling, cond side only)",
    summary="the image remapped by a seeded smooth random flow; keeps colours/textures, drops layout",
    kind="image",
    params=(
        Param("seed", 0, "random seed of the flow field", minimum=0, maximum=2**32 - 1),
        Param("cell_size", 256, "pixels per random noise cell; larger = smoother warp", minimum=1),
    ),
)
def shuffle(image: np.ndarray, seed: int, cell_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    rng = np.random.RandomState(seed)
    x = noise_disk(h, w, cell_size, rng) * float(w - 1)
    y = noise_disk(h, w, cell_size, rng) * float(h - 1)
    flow = np.concatenate([x, y], axis=2).astype(np.float32)
    return cv2.remap(image, flow, None, cv2.INTER_LINEAR)
