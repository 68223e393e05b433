"""A row of already generated pictures (`--images NAME=FOLDER`), scored exactly like a sampled row.

Picture i of the folder answers sample i of the data (the sample a sampled row draws with seed
`seed + i`): its file name is the index, `0000.png`, `0001.png`, ... (any zero padding, and .png,
.jpg, .jpeg or .webp). The folder must hold indices 0..n-1, each once, at the evaluation's size;
files with other names are ignored. Everything is checked before any picture is scored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controlnet import checks
from controlnet.errors import InputError, MissingFileError
from controlnet.evaluation.settings import RowSpec

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def parse_images(spec: str) -> RowSpec:
    """`NAME=FOLDER` (or `FOLDER`, named after it) -> a row that reads its pictures from FOLDER."""
    spec = str(checks.path("--images", spec))
    name, sep, rest = spec.partition("=")
    folder = Path(rest if sep and rest else spec)
    label = name if sep and name else folder.name or str(folder)
    if not folder.is_dir():
        raise MissingFileError(f"--images {spec}: {folder} is not a folder (give NAME=FOLDER of pictures "
                               "named by sample index: 0000.png, 0001.png, ...)")
    return RowSpec(label, folder, None, images=True)


def indexed_files(folder: Path) -> dict[int, Path]:
    """{index: file} for the files named by an integer; two files with one index is an error."""
    out: dict[int, Path] = {}
    for p in sorted(folder.iterdir()):
        i = checks.digits(p.stem)
        if p.suffix.lower() not in SUFFIXES or i is None:
            continue
        if i in out:
            raise InputError(f"--images {folder}: {out[i].name} and {p.name} are both picture {i}")
        out[i] = p
    return out


def read_folder_row(row: RowSpec, n: int, size: int) -> list[np.ndarray]:
    """The n pictures of an images row as (size, size, 3) uint8, or an error naming what is wrong."""
    from controlnet.images import load_image, to_rgb8

    files = indexed_files(row.path)
    missing = [i for i in range(n) if i not in files]
    if missing:
        raise InputError(f"--images {row.label}={row.path}: {n - len(missing)} of the {n} pictures needed (--n) "
                         f"are there; picture {missing[0]} ({missing[0]:04d}.png) is missing")
    pictures = []
    for i in range(n):
        try:
            image = to_rgb8(load_image(files[i]))
        except (OSError, ValueError) as exc:
            raise InputError(f"--images {row.label}: {files[i]} is not a readable image ({exc})") from None
        if image.shape[:2] != (size, size):
            raise InputError(f"--images {row.label}: {files[i].name} is {image.shape[1]}x{image.shape[0]}; the "
                             f"evaluation's pictures are {size}x{size} (the model's size)")
        pictures.append(image)
    return pictures
