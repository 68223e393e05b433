"""Image grids: the results people look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def image_grid(rows: list[list[np.ndarray]], scale: int = 1, gap: int = 2) -> Image.Image:
    """Rows of equally sized (H, W, 3) uint8 images → one PIL image, upscaled `scale`× (nearest)."""
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = img
    out = Image.fromarray(canvas)
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out


def save_grid(rows: list[list[np.ndarray]], path: str | Path, scale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(rows, scale).save(path)
    return path
