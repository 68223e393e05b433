"""A fill50k-like pair set drawn on the fly: circle outlines → filled circles, "<colour> circle with
<colour> background". The original tutorial's sanity check (fill50k lives on the Hub, which we never
reach); small sets of it make the tests and quick experiments.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLORS = {
    "red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220), "yellow": (240, 220, 40),
    "purple": (140, 50, 170), "orange": (250, 140, 20), "white": (250, 250, 250), "black": (10, 10, 10),
}


def circle_pair(size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str]:
    """(condition: white outline on black, target: filled circle on a background, prompt)."""
    import cv2

    names = list(COLORS)
    fg, bg = rng.choice(len(names), 2, replace=False)
    r = int(rng.integers(size // 6, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    target = np.empty((size, size, 3), np.uint8)
    target[:] = COLORS[names[bg]]
    cv2.circle(target, (cx, cy), r, COLORS[names[fg]], -1)
    cond = np.zeros((size, size, 3), np.uint8)
    cv2.circle(cond, (cx, cy), r, (255, 255, 255), max(1, size // 64))
    return cond, target, f"{names[fg]} circle with {names[bg]} background"


def make_fill50k(root: str | Path, n: int = 64, size: int = 64, seed: int = 0) -> Path:
    """Write `n` pairs in the fill50k layout (prompt.json, source/, target/) under `root`."""
    from PIL import Image

    root = Path(root)
    (root / "source").mkdir(parents=True, exist_ok=True)
    (root / "target").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        cond, target, prompt = circle_pair(size, rng)
        Image.fromarray(cond).save(root / "source" / f"{i}.png")
        Image.fromarray(target).save(root / "target" / f"{i}.png")
        lines.append(json.dumps({"source": f"source/{i}.png", "target": f"target/{i}.png", "prompt": prompt}))
    (root / "prompt.json").write_text("\n".join(lines) + "\n")
    return root
