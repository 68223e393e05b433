"""What an evaluation samples from: a miniature-world stream with exact ground truth, or a dataset
folder in any map-style layout the trainer reads (`controlnet.training.data`).

`world:edges` (or seg, depth, ...) streams held-out samples (world seed `HELD_OUT_SEED`, from index
10,000: never seen in training); plain `world` gives every condition, so ControlNets of several
kinds are evaluated on the same pictures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controlnet import checks
from controlnet.errors import InputError, MissingFileError

WORLD_START = 10_000


@dataclass
class Item:
    index: int
    caption: str
    conditions: dict[str, np.ndarray] = field(default_factory=dict)  # kind -> (H, W, 3) uint8 map
    reference: np.ndarray | None = None  # the true picture
    sample: object | None = None  # a world Sample (exact ground truth), or None


class WorldData:
    is_world = True

    def __init__(self, kinds: tuple[str, ...], size: int):
        from controlnet.assets import HELD_OUT_SEED
        from controlnet.world import World

        self.kinds, self.size = kinds, size
        self.world = World(seed=HELD_OUT_SEED, size=size)
        self.spec = "world" + (f":{kinds[0]}" if len(kinds) == 1 else "")

    def item(self, i: int) -> Item:
        s = self.world[WORLD_START + i]
        return Item(i, s.caption, {k: s.conditions[k] for k in self.kinds}, s.image, s)


class FolderData:
    is_world = False

    def __init__(self, path: Path, size: int, kind: str, annotator: str | None = None, annotator_params=None):
        from controlnet.training.data import detect_format, open_sources

        self.sources = open_sources([str(path)], detect_format([str(path)]))
        self.records = [(s, i) for s in self.sources for i in range(len(s))]
        self.size, self.kinds, self.spec = size, (kind,), str(path.resolve())
        self.annotator, self.params = annotator, dict(annotator_params or {})

    def __len__(self) -> int:
        return len(self.records)

    def item(self, i: int) -> Item:
        from controlnet.training.data import BadSample, _resize_crop, decode_rgb

        source, j = self.records[i]
        record = source.record(j)
        try:
            target = _resize_crop(decode_rgb(record["target"], source.root), self.size) \
                if record.get("target") is not None else None
            if record.get("condition") is not None:
                cond = _resize_crop(decode_rgb(record["condition"], source.root), self.size)
            elif target is not None and self.annotator:
                from controlnet.metrics.fidelity import reextract

                cond = reextract(self.annotator, target, **self.params)
            else:
                raise BadSample("no condition image (and no --annotator to compute it from the target)")
        except BadSample as exc:
            raise InputError(f"--data {self.spec}: sample {i} cannot be used ({exc})") from None
        prompt = record.get("prompt") or ""
        return Item(i, prompt if isinstance(prompt, str) else str(prompt[0]), {self.kinds[0]: cond}, target)


def open_data(spec: str, size: int, kinds: tuple[str, ...], annotator=None, annotator_params=None):
    """`world`, `world:KIND` or a dataset folder; `kinds` are the conditions the ControlNets need."""
    from controlnet.world import CONDITIONS

    spec = str(checks.path("--data", spec))
    if spec == "world" or spec.startswith("world:"):
        named = spec.split(":", 1)[1] if ":" in spec else None
        if named is not None:
            checks.choice("world stream (--data world:KIND)", named, CONDITIONS)
            bad = [k for k in kinds if k != named]
            if bad:
                raise InputError(f"--data {spec} gives {named} maps but a ControlNet needs {bad[0]}; use --data world")
        wanted = (named,) if named else (kinds or ("edges",))
        for k in wanted:
            checks.choice("world condition", k, CONDITIONS)
        return WorldData(tuple(dict.fromkeys(wanted)), size)
    path = Path(spec)
    if not path.exists():
        raise MissingFileError(f"--data {spec}: no such folder (give a dataset folder, world or world:KIND)")
    kind = annotator or "condition"
    data = FolderData(path, size, kind, annotator, annotator_params)
    if len(data) == 0:
        raise InputError(f"--data {spec}: the dataset has no samples")
    return data
