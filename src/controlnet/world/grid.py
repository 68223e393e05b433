"""Image grids: the results people look at, written atomically (a failed write keeps the old file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from controlnet import checks
from controlnet.errors import InputError
from controlnet.files import save_image, writable_file
from controlnet.images import MAX_PIXELS

GAP = 2  # pixels between cells, before upscaling
SCALE = 4  # the demo grids' upscaling; outlines are drawn at this resolution, thinner than a source pixel
LINE_CONDITIONS = ("edges", "canny", "scribble", "outline")  # maps that are lines already


def image_grid(rows: list[list[np.ndarray]], scale: int = 1, gap: int = GAP) -> Image.Image:
    """Rows of equally sized (H, W, 3) uint8 images → one PIL image, upscaled `scale`× (nearest)."""
    if not rows or not rows[0]:
        raise InputError("a grid needs at least one image")
    h, w = rows[0][0].shape[:2]
    cols = max(len(r) for r in rows)
    check_grid_size(len(rows), cols, h, w, scale, gap)
    canvas = np.full((len(rows) * (h + gap) - gap, cols * (w + gap) - gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            canvas[i * (h + gap): i * (h + gap) + h, j * (w + gap): j * (w + gap) + w] = img
    out = Image.fromarray(canvas)
    return out.resize((out.width * scale, out.height * scale), Image.NEAREST) if scale > 1 else out


def check_grid_size(rows: int, cols: int, h: int, w: int, scale: int, gap: int = GAP) -> None:
    """Refuse, before any work, a grid too large to write and read back."""
    scale = checks.positive_int("scale", scale)
    height, width = (rows * (h + gap) - gap) * scale, (cols * (w + gap) - gap) * scale
    if height * width > MAX_PIXELS:  # larger pictures are refused when read back (decompression bombs)
        raise InputError(f"the grid would be {width}x{height} pixels (at most {MAX_PIXELS:,} allowed); "
                         f"use fewer samples, a smaller size or a smaller scale")


def check_grid_path(path: str | Path) -> Path:
    """An image file name we can write (known suffix, not a folder, writable folder), checked up front."""
    return writable_file(path, what="grid", image=True)


def save_grid(rows: list[list[np.ndarray]], path: str | Path, scale: int = 1) -> Path:
    path = check_grid_path(path)
    save_image(image_grid(rows, scale), path)
    return path


def save_world_grid(out: str | Path, n: int = 8, seed: int = 0, size: int = 64, min_shapes: int = 1,
                    max_shapes: int = 3, scale: int = 3) -> tuple[Path, list[str], tuple[str, ...]]:
    """n world samples, one per row: the picture, then every condition map. Returns (path, captions,
    condition names); every input is checked before the first sample is drawn."""
    from controlnet.world.render import preview
    from controlnet.world.world import World

    world = World(seed, size, min_shapes, max_shapes)
    n = checks.positive_int("n", n)
    check_grid_size(n, 1 + len(world.conditions), world.size, world.size, scale)
    path = check_grid_path(out)
    samples = list(world.take(n))
    rows = [[s.image] + [preview(s.conditions[k]) for k in world.conditions] for s in samples]
    return save_grid(rows, path, scale), [s.caption for s in samples], world.conditions


def outline(condition_map, condition: str):
    """(H, W) bool: the condition's lines, or the boundaries between its regions (seg, depth)."""
    m = np.asarray(condition_map).astype(np.int16)
    if condition in LINE_CONDITIONS:
        return m.max(axis=2) > 127
    edge = np.zeros(m.shape[:2], bool)
    edge[:, :-1] |= (m[:, :-1] != m[:, 1:]).any(axis=2)
    edge[:-1, :] |= (m[:-1, :] != m[1:, :]).any(axis=2)
    return edge


def overlay_outline(picture, lines, scale: int = SCALE):
    """`lines` (source resolution) drawn over the upscaled `picture`, thinner than a source pixel
    (its block shrunk by one pixel on each side), black on light pixels and white on dark ones."""
    block = np.pad(np.kron(lines, np.ones((scale, scale), bool)), 1)
    mask = block[1:-1, 1:-1] & block[:-2, 1:-1] & block[2:, 1:-1] & block[1:-1, :-2] & block[1:-1, 2:]
    out = picture.copy()
    light = picture.astype(np.int32).sum(axis=2) > 3 * 127
    out[mask & light], out[mask & ~light] = 0, 255
    return out


def upscale(image, scale: int = SCALE) -> np.ndarray:
    """Each pixel as a scale x scale block (the demo grids' nearest-neighbour upscaling)."""
    return np.repeat(np.repeat(np.asarray(image), scale, axis=0), scale, axis=1)
