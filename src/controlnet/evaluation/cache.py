"""Generated pictures on disk, keyed by (model, row, settings, prompt setting, data) and seed.

Image i of a row is `cache/<key>/<seed>.png` with seed = base + i, so a rerun with a larger n
generates only the new pictures and an interrupted run resumes where it stopped; every picture is
written atomically, so an interruption never leaves half a file. An entry damaged anyway (a file
cut short, of the wrong size, features holding NaN) counts as missing and is computed again.
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
        """The seeds without a usable picture; a damaged one is removed (with its features) to be made again."""
        out = []
        for s in seeds:
            if self._picture(s) is None:
                self._drop(s)
                out.append(s)
        return out

    def _picture(self, seed: int) -> np.ndarray | None:
        """The cached picture, or None when it is absent, unreadable or not the key's size."""
        from controlnet.images import to_rgb8

        if not self.path(seed).is_file():
            return None
        try:
            image = to_rgb8(self.path(seed))
        except (OSError, ValueError):  # InputError is a ValueError
            return None
        size = self.description.get("size")
        return image if size is None or image.shape[:2] == (size, size) else None

    def _drop(self, seed: int) -> None:
        for path in (self.path(seed), *self.folder.glob(f"{seed}.*.npy")):
            path.unlink(missing_ok=True)

    def _features_path(self, seed: int, name: str = "inception") -> Path:
        return self.folder / f"{seed}.{name}.npy"

    def put(self, seed: int, image: np.ndarray) -> None:
        if not (self.folder / "key.json").is_file():
            write_json(self.folder / "key.json", self.description)
        save_image(image, self.path(seed))

    def get(self, seed: int) -> np.ndarray:
        from controlnet.errors import InputError

        image = self._picture(seed)
        if image is None:
            raise InputError(f"the cached picture {self.path(seed)} is damaged or missing; delete it (or the cache "
                             "folder) and run again")
        return image

    def features(self, seeds, compute, name: str = "inception") -> np.ndarray:
        """Features of these pictures, cached beside them (`<seed>.<name>.npy`: one name per way of
        computing them); a file that is unreadable, not finite or of another length than the rest is
        computed again."""
        cached = {s: _load_npy(self._features_path(s, name)) for s in seeds}
        lengths = [f.shape for f in cached.values() if f is not None]
        usual = max(set(lengths), key=lengths.count) if lengths else None
        todo = [s for s in seeds if cached[s] is None or cached[s].shape != usual]
        if todo:
            for s, f in zip(todo, compute([self.get(s) for s in todo])):
                cached[s] = np.asarray(f)
                _save_npy(self._features_path(s, name), cached[s])
        return np.stack([cached[s] for s in seeds])


def _load_npy(path: Path) -> np.ndarray | None:
    """A cached feature vector, or None when it is absent or damaged (never unpickled)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    ok = array.ndim == 1 and array.dtype.kind == "f" and np.isfinite(array).all()
    return array if ok else None


def _save_npy(path: Path, array: np.ndarray) -> None:
    from controlnet.files import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
