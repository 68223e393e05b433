"""Render a scene: the picture and every condition map, all from one label map so they agree exactly.

The label map holds, per pixel, 0 for background or k+1 for the k-th drawn shape that is visible
there; picture colours, segmentation, depth and edges are lookups into it.
"""

from __future__ import annotations

import cv2
import numpy as np

from controlnet.world.palette import COLOURS, SEG_COLOURS, texture_tint
from controlnet.world.scene import _SHIFT, Scene, to_pixels

CONDITIONS = ("edges", "canny", "seg", "depth", "scribble", "outline", "inpaint")
MASKED_PREVIEW = 4  # checker period, pixels, that shows the masked region of an inpaint map


def label_map(masks: list[np.ndarray]) -> np.ndarray:
    """uint8: 0 = background, k+1 = shape k (draw order) where it is visible."""
    labels = np.zeros(masks[0].shape, np.uint8)
    for k, m in enumerate(masks):
        labels[m > 0] = k + 1
    return labels


def background(scene: Scene, size: int) -> np.ndarray:
    """(size, size, 3) uint8: the background colour, with its texture in a tint of the same colour."""
    base = np.array(COLOURS[scene.background], np.uint8)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = base
    if scene.texture == "plain":
        return img
    coords = (np.arange(size) + 0.5) / size
    x, y = coords[None, :], coords[:, None]
    p = scene.texture_period
    if scene.texture == "striped":
        a = np.deg2rad(scene.texture_angle)
        on = np.floor((x * np.cos(a) + y * np.sin(a)) / (p / 2)) % 2 == 1
    elif scene.texture == "checkered":
        on = (np.floor(x / p) + np.floor(y / p)) % 2 == 1
    elif scene.texture == "dotted":
        on = ((x % p - p / 2) ** 2 + (y % p - p / 2) ** 2) < (0.25 * p) ** 2
    else:
        raise ValueError(f"unknown texture {scene.texture!r}")
    img[on] = texture_tint(COLOURS[scene.background])
    return img


def picture(scene: Scene, labels: np.ndarray) -> np.ndarray:
    lut = np.array([(0, 0, 0)] + [s.rgb for s in scene.shapes], np.uint8)
    img = background(scene, labels.shape[0])
    fg = labels > 0
    img[fg] = lut[labels[fg]]
    return img


def edges(labels: np.ndarray) -> np.ndarray:
    """1-px outlines of every visible region, drawn on the nearer side of each boundary."""
    pad = np.pad(labels, 1, mode="edge")
    h, w = labels.shape
    out = np.zeros_like(labels, dtype=bool)
    for dy, dx in ((0, 1), (2, 1), (1, 0), (1, 2)):
        out |= labels > pad[dy : dy + h, dx : dx + w]
    return _gray(out.astype(np.uint8) * 255)


def canny(img: np.ndarray) -> np.ndarray:
    """What the canny annotator (100/200 thresholds) sees in the picture, texture included."""
    return _gray(cv2.Canny(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), 100, 200))


def segmentation(scene: Scene, labels: np.ndarray) -> np.ndarray:
    lut = np.array([SEG_COLOURS["background"]] + [SEG_COLOURS[s.kind] for s in scene.shapes], np.uint8)
    return lut[labels]


def depth_levels(n_shapes: int) -> np.ndarray:
    """Depth value per label: background 0, the nearest shape 255, each farther layer 85 darker."""
    return np.array([0] + [255 - 85 * (n_shapes - 1 - k) for k in range(n_shapes)], np.uint8)


def depth(scene: Scene, labels: np.ndarray) -> np.ndarray:
    return _gray(depth_levels(len(scene.shapes))[labels])


def scribble(scene: Scene, masks: list[np.ndarray]) -> np.ndarray:
    """Thick wobbly strokes along what is visible of each outline, like a quick hand drawing."""
    rng = np.random.default_rng(scene.stroke_seed)
    size = masks[0].shape[0]
    canvas = np.zeros((size, size), np.uint8)
    thickness = max(2, round(size / 32))
    for shape, mask in zip(scene.shapes, masks):
        canvas[mask > 0] = 0  # a nearer shape hides the strokes behind it
        for line in shape.outlines():
            wobbly = _wobble(_densify(line, 64), rng, amplitude=0.05 * shape.radius)
            start = int(rng.integers(len(wobbly)))  # pen starts anywhere, overshoots a little
            stroke = np.roll(wobbly, -start, 0)
            stroke = np.concatenate([stroke, stroke[: int(rng.integers(2, 8))]])
            cv2.polylines(canvas, [to_pixels(stroke, size)], False, 255, thickness, cv2.LINE_AA, shift=4)
    return _gray(canvas)


def outline(scene: Scene, size: int) -> np.ndarray:
    """fill50k-style: thin white outlines of every shape in full, hidden parts included."""
    canvas = np.zeros((size, size), np.uint8)
    thickness = max(1, round(size / 128))
    for shape in scene.shapes:
        lines = [to_pixels(o, size) for o in shape.outlines()]
        cv2.polylines(canvas, lines, True, 255, thickness, cv2.LINE_AA, shift=4)
    return _gray(canvas)


def inpaint_mask(scene: Scene, size: int) -> np.ndarray:
    """(size, size) bool, True = repaint: one or two rectangles or ellipses (unit coordinates, so alike
    at any size), each centred near a shape's centre so that part of the shapes is hidden."""
    rng = np.random.default_rng([scene.stroke_seed, 1])  # its own stream: the rest of the world is unchanged
    canvas = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        shape = scene.shapes[int(rng.integers(len(scene.shapes)))]
        cx, cy = (c + rng.uniform(-0.6, 0.6) * shape.radius for c in (shape.cx, shape.cy))
        half_w, half_h = rng.uniform(0.1, 0.28, 2)
        angle = rng.uniform(0, np.pi)
        if rng.random() < 0.5:  # rectangle
            corners = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)]) * (half_w, half_h)
        else:  # ellipse (blob)
            t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            corners = np.stack([half_w * np.cos(t), half_h * np.sin(t)], 1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        cv2.fillPoly(canvas, [to_pixels(corners @ rot.T + (cx, cy), size)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas > 0


def inpaint_map(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The `inpaint` annotator's own map: RGBA uint8, the picture, alpha 255 where to repaint, marked
    as an inpaint map, so the pipeline (like `annotators.map_to_hint`) makes those pixels -1."""
    from controlnet.annotators.inpaint import inpaint

    return inpaint(img, mask)


def preview(condition_map: np.ndarray) -> np.ndarray:
    """An (H, W, 3) picture of any condition map: an inpaint map's masked pixels as a checkerboard."""
    if condition_map.shape[2] == 3:
        return condition_map
    h, w = condition_map.shape[:2]
    yy, xx = np.mgrid[:h, :w] // MASKED_PREVIEW
    checker = np.where(((yy + xx) % 2 == 0)[..., None], 40, 215).astype(np.uint8)
    masked = condition_map[:, :, 3:] > 127
    return np.where(masked, checker, condition_map[:, :, :3])


def render(scene: Scene, size: int, conditions=CONDITIONS) -> tuple[np.ndarray, np.ndarray, dict]:
    """(picture, label map, {condition: (size, size, 3) uint8, or 4 channels for inpaint}) for the
    requested condition kinds."""
    unknown = set(conditions) - set(CONDITIONS)
    if unknown:
        raise ValueError(f"unknown condition kinds {sorted(unknown)}; known: {CONDITIONS}")
    masks = [s.mask(size) for s in scene.shapes]
    labels = label_map(masks)
    img = picture(scene, labels)
    maps = {}
    for kind in conditions:
        if kind == "edges":
            maps[kind] = edges(labels)
        elif kind == "canny":
            maps[kind] = canny(img)
        elif kind == "seg":
            maps[kind] = segmentation(scene, labels)
        elif kind == "depth":
            maps[kind] = depth(scene, labels)
        elif kind == "scribble":
            maps[kind] = scribble(scene, masks)
        elif kind == "outline":
            maps[kind] = outline(scene, size)
        elif kind == "inpaint":
            maps[kind] = inpaint_map(img, inpaint_mask(scene, size))
    return img, labels, maps


def _gray(single: np.ndarray) -> np.ndarray:
    return np.repeat(single[:, :, None], 3, axis=2)


def _densify(closed: np.ndarray, n: int) -> np.ndarray:
    """Resample a closed polyline to n points evenly spaced along its length."""
    pts = np.concatenate([closed, closed[:1]])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    t = np.concatenate([[0], np.cumsum(seg)])
    s = np.linspace(0, t[-1], n, endpoint=False)
    return np.stack([np.interp(s, t, pts[:, 0]), np.interp(s, t, pts[:, 1])], 1)


def _wobble(pts: np.ndarray, rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """Displace points by a smooth random curve (a few low-frequency sines)."""
    n = len(pts)
    phase = np.arange(n) * 2 * np.pi / n
    offset = np.zeros_like(pts)
    for freq in (2, 3, 5):
        offset += amplitude * rng.normal(size=2) * np.sin(freq * phase[:, None] + rng.uniform(0, 2 * np.pi, 2))
    return pts + offset
