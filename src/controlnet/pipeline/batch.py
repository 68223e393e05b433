"""Batches from folders: condition images paired across units by file name, one output per name.

A unit's source is a folder (one image per output) or a single image (the same for every output).
Folders pair up by file stem (`a.png` with `a.jpg`); a name missing from one folder is an error
before anything runs, naming the files, since a silently dropped picture is easy to miss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from controlnet.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SHOWN = 5  # missing names listed in an error


@dataclass(frozen=True)
class BatchItem:
    """One output's inputs: `name` (the shared file stem) and one image path per unit."""

    name: str
    images: tuple[Path, ...]

    def outputs(self, outdir: Path, num_images: int = 1) -> list[Path]:
        """The files this item writes; all present (each written atomically) means it is done."""
        if num_images == 1:
            return [outdir / f"{self.name}.png"]
        return [outdir / f"{self.name}-{k}.png" for k in range(num_images)]

    def done(self, outdir: Path, num_images: int = 1) -> bool:
        return all(p.is_file() for p in self.outputs(outdir, num_images))


def folder_images(folder: str | os.PathLike, what: str = "folder") -> dict[str, Path]:
    """{stem: image file} of a folder's pictures (by suffix; not recursive; hidden files skipped)."""
    folder = Path(folder)
    try:
        entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise InputError(f"{what} {folder} cannot be read ({exc.strerror or exc})") from None
    if not entries:
        raise InputError(f"{what} {folder} is empty; put the condition images in it")
    images: dict[str, Path] = {}
    for p in entries:
        if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
            continue
        if p.stem in images:
            raise InputError(f"{what} {folder} has two images named {p.stem} ({images[p.stem].name}, {p.name}); "
                             "outputs are named after the input, so keep one")
        images[p.stem] = p
    if not images:
        raise InputError(f"{what} {folder} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                         f"found {', '.join(p.name for p in entries[:SHOWN])}{' ...' if len(entries) > SHOWN else ''}")
    return images


def pair_sources(sources: list[str | os.PathLike], labels: list[str]) -> list[BatchItem]:
    """The batch for one source per unit (a folder or an image used for every item), in name order."""
    sources = [Path(s) for s in sources]
    folders = {i: folder_images(s, labels[i]) for i, s in enumerate(sources) if s.is_dir()}
    if not folders:
        raise InputError("a batch needs at least one unit whose --image is a folder")
    names = sorted(set().union(*folders.values()))
    gaps = [(i, [n for n in names if n not in found]) for i, found in folders.items()]
    gaps = [(i, missing) for i, missing in gaps if missing]
    if gaps:
        told = "; ".join(f"{labels[i]} {sources[i]} lacks {_listed(missing)}" for i, missing in gaps)
        raise InputError(f"the unit folders do not pair up by file name: {told}; give every folder an image of each name "
                         "(the extension may differ)")
    return [BatchItem(n, tuple(folders[i][n] if i in folders else s for i, s in enumerate(sources))) for n in names]


def _listed(names: list[str]) -> str:
    more = len(names) - SHOWN
    return ", ".join(names[:SHOWN]) + (f" and {more} more" if more > 0 else "")
