"""Prompt adherence from pixels: does a picture show the colours its caption names?

The world's colours are far apart, so each pixel gets the name of its nearest palette colour; the
background is the commonest name along the picture's border, and each named shape colour must
cover a few percent of the picture.
"""

from __future__ import annotations

import numpy as np

from controlnet.world.palette import nearest_colour
from controlnet.world.scene import Scene

MIN_SHARE = 0.03  # the smallest shape covers ~5% of the picture; blurry rims stay under this


def colour_check(image: np.ndarray, scene: Scene) -> dict:
    """{"background": bool, "shapes": [bool per shape], "ok": all of them} for one (H, W, 3) picture."""
    h, w, _ = image.shape
    names = nearest_colour(image.reshape(-1, 3)).reshape(h, w)
    border = np.concatenate([names[:2].ravel(), names[-2:].ravel(), names[:, :2].ravel(), names[:, -2:].ravel()])
    values, counts = np.unique(border, return_counts=True)
    background = str(values[counts.argmax()])
    shapes = [bool((names == s.colour).mean() >= MIN_SHARE) for s in scene.shapes]
    bg_ok = background == scene.background
    return {"background": bg_ok, "seen_background": background, "shapes": shapes, "ok": bg_ok and all(shapes)}


def adherence(images, scenes) -> float:
    """Share of pictures whose background and every shape have the colours of their scene."""
    checks = [colour_check(img, sc)["ok"] for img, sc in zip(images, scenes)]
    return float(np.mean(checks)) if checks else float("nan")
