"""The world's fixed vocabularies: colour names with their RGB, shape kinds with their segmentation colour.

Everything a benchmark needs to turn pixels back into words lives here, so that the generator and
the measurements can never disagree about what "red" or a "circle" looks like.
"""

from __future__ import annotations

import numpy as np

# Named colours, far enough apart that the nearest name of a rendered pixel is never in doubt.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 160, 60),
    "cyan": (40, 200, 220),
    "blue": (40, 70, 210),
    "purple": (130, 50, 180),
    "pink": (245, 140, 200),
    "brown": (120, 70, 35),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (25, 25, 25),
}
COLOUR_NAMES = tuple(COLOURS)

SHAPE_KINDS = ("circle", "square", "triangle", "star", "ring")

# Segmentation palette: one fixed colour per shape kind, background black (index 0).
SEG_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "circle": (230, 25, 75),
    "square": (60, 180, 75),
    "triangle": (0, 130, 200),
    "star": (255, 225, 25),
    "ring": (145, 30, 180),
}

TEXTURES = ("plain", "striped", "checkered", "dotted")

_NAMES = np.array(COLOUR_NAMES)
_RGB = np.array([COLOURS[n] for n in COLOUR_NAMES], dtype=np.float32)


def texture_tint(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The second colour of a textured background: the same name, a shade lighter or darker."""
    c = np.asarray(rgb, dtype=np.float32)
    target = 0.0 if c.mean() > 110 else 255.0
    return tuple(int(round(v)) for v in c + 0.15 * (target - c))


def nearest_colour(rgb) -> str | np.ndarray:
    """Name of the palette colour nearest to an RGB triple (or to each row of an (N, 3) array)."""
    arr = np.asarray(rgb, dtype=np.float32)
    d = ((arr.reshape(-1, 1, 3) - _RGB[None]) ** 2).sum(-1)
    names = _NAMES[d.argmin(1)]
    return str(names[0]) if arr.ndim == 1 else names
