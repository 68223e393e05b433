"""Generated pictures on disk, keyed by (model, row, settings, prompt setting, data) and seed.

Image i of a row is `cache/<key>/<seed>.png` with seed = base + i, so a rerun with a larger n
generates only the new pictures and an interrupted run resumes where it stopped; every picture is
written atomically, so an interruption never leaves half a file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from controlnet.files import save_image, write_json


def model_id(path: Path | None) -> dict | None:
    """What identifies weights on disk: the resolved path, total size and newest modification time."""
    if path is None:
        return None
    path = Path(path).resolve()
    stats = [p.stat() for p in _weight_files(path)]
    return {"path": str(path), "bytes": sum(s.st_size for s in stats),
            "mtime": max((s.st_mtime_ns for s in stats), default=0)}


def _weight_files(path: Path) -> list[Path]:
    """The files that make these weights: not the ControlNets a base model folder carries in
    `controlnet-*/` (other rows: adding one must not void the base model's cached pictures), not the
    recommended settings (the settings a row uses are part of its key already)."""
    from controlnet.recommended import FILE

    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file() and p.name != FILE
            and not p.relative_to(path).parts[0].startswith("controlnet-")]


class ImageCache:
    def __init__(self, root: Path, description: dict):
        self.description = description
        text = json.dumps(description, sort_keys=True, default=str)
        self.key = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.folder = Path(root) / self.key

    def path(self, seed: int) -> Path:
        return self.folder / f"{seed}.png"

    def missing(self, seeds) -> list[int]:
        return [s for s in seeds if not self.path(s).is_file()]

    def put(self, seed: int, image: np.ndarray) -> None:
        if not (self.folder / "key.json").is_file():
            write_json(self.folder / "key.json", self.description)
        save_image(image, self.path(seed))

    def get(self, seed: int) -> np.ndarray:
        from controlnet.images import to_rgb8

        return to_rgb8(self.path(seed))

    def features(self, seeds, compute) -> np.ndarray:
        """Inception features of these pictures, cached beside them (`<seed>.inception.npy`)."""
        out = []
        todo = [s for s in seeds if not (self.folder / f"{s}.inception.npy").is_file()]
        if todo:
            for s, f in zip(todo, compute([self.get(s) for s in todo])):
                _save_npy(self.folder / f"{s}.inception.npy", f)
        for s in seeds:
            out.append(np.load(self.folder / f"{s}.inception.npy"))
        return np.stack(out)


def _save_npy(path: Path, array: np.ndarray) -> None:
    from controlnet.files import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
