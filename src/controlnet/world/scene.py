"""A scene: what a picture shows, independent of the resolution it is rendered at.

Geometry is in unit coordinates (x right, y down, the picture is [0, 1]²), so the same scene
renders alike at 64 or 512 pixels, and the scene is the ground truth benchmarks measure against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from controlnet.world.palette import COLOUR_NAMES, COLOURS, SHAPE_KINDS, TEXTURES

_SHIFT = 4  # fixed-point bits for cv2 polygon drawing: sub-pixel exact outlines


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    cx: float
    cy: float
    radius: float  # half the shape's extent, unit coordinates
    rotation: float  # degrees

    @property
    def rgb(self) -> tuple[int, int, int]:
        return COLOURS[self.colour]

    def outlines(self) -> list[np.ndarray]:
        """Closed outlines in unit coordinates: the outer boundary, then a hole for a ring."""
        r, rot = self.radius, math.radians(self.rotation)
        if self.kind in ("circle", "ring"):
            outer = _regular(self.cx, self.cy, r, 48, rot)
            return [outer, _regular(self.cx, self.cy, 0.55 * r, 48, rot)] if self.kind == "ring" else [outer]
        if self.kind == "square":
            return [_regular(self.cx, self.cy, r * math.sqrt(2), 4, rot + math.pi / 4)]
        if self.kind == "triangle":  # centred on its bounding circle, apex up before rotation
            return [_regular(self.cx, self.cy + 0.2 * r, 1.2 * r, 3, rot - math.pi / 2)]
        if self.kind == "star":
            ang = rot - math.pi / 2 + np.arange(10) * math.pi / 5
            rad = np.where(np.arange(10) % 2 == 0, 1.2 * r, 0.5 * r)
            return [np.stack([self.cx + rad * np.cos(ang), self.cy + rad * np.sin(ang)], 1)]
        raise ValueError(f"unknown shape kind {self.kind!r}")

    def box(self) -> tuple[float, float, float, float]:
        """Bounding box (x0, y0, x1, y1) in unit coordinates, clipped to the picture."""
        pts = self.outlines()[0]
        lo, hi = np.clip(pts.min(0), 0, 1), np.clip(pts.max(0), 0, 1)
        return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))

    def mask(self, size: int) -> np.ndarray:
        """uint8 {0, 1} mask of the shape's full area at `size`×`size` pixels."""
        m = np.zeros((size, size), np.uint8)
        outer, *holes = (to_pixels(o, size) for o in self.outlines())
        cv2.fillPoly(m, [outer], 1, lineType=cv2.LINE_8, shift=_SHIFT)
        if holes:
            cv2.fillPoly(m, holes, 0, lineType=cv2.LINE_8, shift=_SHIFT)
        return m


@dataclass(frozen=True)
class Scene:
    background: str  # colour name
    texture: str  # one of TEXTURES
    texture_period: float  # unit coordinates
    texture_angle: int  # degrees, stripes only
    shapes: tuple[Shape, ...]  # in draw order: later shapes are nearer and cover earlier ones
    stroke_seed: int  # wobble of the scribble strokes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shapes"] = [asdict(s) for s in self.shapes]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(**{**d, "shapes": tuple(Shape(**s) for s in d["shapes"])})


def to_pixels(points: np.ndarray, size: int) -> np.ndarray:
    """Unit coordinates → cv2 fixed-point pixel coordinates (pixel centres at integer + 0.5)."""
    return np.round(points * size * (1 << _SHIFT) - (1 << (_SHIFT - 1))).astype(np.int32)


def _regular(cx: float, cy: float, r: float, n: int, start: float) -> np.ndarray:
    ang = start + np.arange(n) * 2 * math.pi / n
    return np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)


def sample_scene(
    rng: np.random.Generator,
    min_shapes: int = 1,
    max_shapes: int = 3,
    kinds: tuple[str, ...] = SHAPE_KINDS,
    textured: float = 0.5,
    min_visible: float = 0.5,
) -> Scene:
    """Draw a random scene; every shape keeps at least `min_visible` of its area in view."""
    n = int(rng.integers(min_shapes, max_shapes + 1))
    background = str(rng.choice(COLOUR_NAMES))
    texture = str(rng.choice(TEXTURES[1:])) if rng.random() < textured else "plain"
    period = float(rng.uniform(0.12, 0.25))
    angle = int(rng.choice([0, 45, 90, 135]))
    lo, hi = (0.18, 0.34) if n == 1 else (0.12, 0.24)
    shape_colours = [c for c in COLOUR_NAMES if c != background]
    shapes: list[Shape] = []
    for _ in range(n):
        kind = str(rng.choice(kinds))
        colour = str(rng.choice(shape_colours))
        for _attempt in range(20):
            r = float(rng.uniform(lo, hi))
            m = 0.9 * r
            cand = Shape(kind, colour, float(rng.uniform(m, 1 - m)), float(rng.uniform(m, 1 - m)), r,
                         float(rng.uniform(-25, 25)) if kind != "circle" else 0.0)
            if _all_visible([*shapes, cand], min_visible):
                shapes.append(cand)
                break
        # a crowded scene that cannot fit another shape keeps fewer shapes rather than hide one
    return Scene(background, texture, period, angle, tuple(shapes), int(rng.integers(2**31)))


def _all_visible(shapes: list[Shape], min_visible: float, size: int = 32) -> bool:
    masks = [s.mask(size) for s in shapes]
    cover = np.zeros((size, size), bool)
    for m in reversed(masks):
        area = m.sum()
        if area == 0 or (m.astype(bool) & ~cover).sum() < min_visible * area:
            return False
        cover |= m.astype(bool)
    return True
