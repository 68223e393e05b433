"""The generated world: sample i of seed s is always the same picture, caption and condition maps."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controlnet import checks
from controlnet.errors import InputError
from controlnet.world.caption import caption
from controlnet.world.render import CONDITIONS, render
from controlnet.world.scene import Scene, sample_scene

MIN_SIZE, MAX_SIZE = 8, 2048  # pixels; below 8 the shapes vanish, above 2048 a sample takes seconds
MAX_SHAPES = 3  # the depth map's layers (255, 170, 85); a fourth would be as dark as the background


@dataclass
class Sample:
    """One picture with its caption, its condition maps and the scene it was drawn from."""

    index: int
    scene: Scene
    image: np.ndarray  # (size, size, 3) uint8 RGB
    labels: np.ndarray  # (size, size) uint8: 0 background, k+1 visible shape k
    caption: str
    conditions: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.image.shape[0]

    def truth(self) -> dict:
        """Ground truth for benchmarks, JSON-serialisable: names, RGB, pixel boxes, draw order."""
        shapes = []
        for k, s in enumerate(self.scene.shapes):
            x0, y0, x1, y1 = s.box()
            area = int(s.mask(self.size).sum())
            shapes.append({
                "kind": s.kind, "colour": s.colour, "rgb": list(s.rgb), "draw_order": k,
                "box": [round(v * self.size) for v in (x0, y0, x1, y1)],
                "center": [s.cx, s.cy], "radius": s.radius, "rotation": s.rotation,
                "visible_fraction": float((self.labels == k + 1).sum() / max(area, 1)),
            })
        bg = self.scene.background
        from controlnet.world.palette import COLOURS

        return {"index": self.index, "size": self.size, "caption": self.caption,
                "background": {"colour": bg, "rgb": list(COLOURS[bg]), "texture": self.scene.texture},
                "shapes": shapes}


class World:
    """An endless, seeded stream of samples; `world[i]` is random-access and reproducible.

    Sample i depends only on (seed, i) and the scene options, never on what was drawn before,
    so datasets can be sharded, resumed or regenerated at another size and still agree.
    """

    def __init__(self, seed: int = 0, size: int = 64, min_shapes: int = 1, max_shapes: int = 3,
                 textured: float = 0.5, conditions=CONDITIONS):
        self.seed = checks.integer("seed", seed, lo=0)  # numpy seeds are non-negative
        self.size = checks.integer("size", size, lo=MIN_SIZE, hi=MAX_SIZE)
        self.max_shapes = checks.integer("max_shapes", max_shapes, lo=1, hi=MAX_SHAPES)
        self.min_shapes = checks.integer("min_shapes", min_shapes, lo=1, hi=MAX_SHAPES)
        if self.min_shapes > self.max_shapes:
            raise InputError(f"min_shapes ({min_shapes}) must not exceed max_shapes ({max_shapes})")
        self.textured = checks.number("textured", textured, lo=0.0, hi=1.0)
        self.conditions = tuple(checks.choice("condition", c, CONDITIONS) for c in conditions)

    def scene(self, index: int) -> Scene:
        rng = np.random.default_rng([self.seed, index])
        return sample_scene(rng, self.min_shapes, self.max_shapes, textured=self.textured)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            raise IndexError("the world is endless: negative indices have no meaning")
        scene = self.scene(index)
        img, labels, maps = render(scene, self.size, self.conditions)
        return Sample(index, scene, img, labels, caption(scene), maps)

    def take(self, n: int, start: int = 0):
        """Samples start, start+1, ..., start+n-1."""
        checks.integer("n", n, lo=0)
        checks.integer("start", start, lo=0)
        for i in range(start, start + n):
            yield self[i]

    def batch(self, indices) -> tuple[np.ndarray, list[str], dict[str, np.ndarray]]:
        """(images (B, H, W, 3) uint8, captions, {condition: (B, H, W, 3) uint8})."""
        samples = [self[int(i)] for i in indices]
        maps = {k: np.stack([s.conditions[k] for s in samples]) for k in self.conditions}
        return np.stack([s.image for s in samples]), [s.caption for s in samples], maps
