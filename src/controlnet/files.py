"""Writing the user's files safely: every writer of this package goes through `atomic_file`.

A file is written under a temporary name in the same folder, flushed to disk, then renamed over
the destination in one step. Whatever fails on the way (an encoder error, a full disk, Ctrl-C) the
old file is left exactly as it was and no partial file remains.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError

# PIL format names by suffix, for writers that are handed a temporary name without the suffix
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP",
                 ".tif": "TIFF", ".tiff": "TIFF"}
NO_SPACE = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yield a temporary path next to `path`; on success it replaces `path` in one rename (after an
    fsync), on any failure it is removed."""
    path = checks.path("file name", path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name, not a created file: the writer creates it with the usual permissions
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        if exc.filename is None or str(exc.filename) == str(tmp):  # name the user's file, not our temp
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        _remove(tmp)
        raise


def _fsync(path: Path) -> None:
    if path.is_file():
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_text(text)


def write_json(path: str | os.PathLike, obj, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, indent=indent) + "\n")


def save_image(image, path: str | os.PathLike, **params) -> None:
    """Save a PIL image (or an HxW[x3|4] uint8 array) atomically; the format follows the suffix.
    An image the format cannot hold (RGBA as JPEG) is an `InputError`, and the old file survives."""
    from PIL import Image

    path = Path(path)
    fmt = image_format(path)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    if fmt == "JPEG" and image.mode not in ("RGB", "L", "CMYK"):
        raise InputError(f"{path}: a {image.mode} image cannot be saved as JPEG; use a .png name")
    with atomic_file(path) as tmp:
        image.save(tmp, format=fmt, **params)


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG atomically, and close it (figures hold memory until closed)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def image_format(path: str | os.PathLike) -> str:
    """PIL's format name for an image file name, or an `InputError` for an unknown suffix."""
    path = Path(path)
    fmt = IMAGE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown image suffix {path.suffix!r}; use one of {', '.join(sorted(IMAGE_FORMATS))}")
    return fmt


def writable_folder(path: str | os.PathLike, what: str = "output folder", create: bool = True) -> Path:
    """Make sure `path` is (or can become) a folder we can write in, before any long work starts.
    With `create=False` nothing is made: the nearest existing folder above it is probed instead, so a
    command refused by a later check leaves no empty folder behind (its writers make the folders)."""
    path = checks.path(what, path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} is a file; give a folder (or a new name)")
    here = path if create or path.exists() else _nearest_existing(path, what)
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probe = here / f".write-test.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{what} {path} is not writable ({exc.strerror or exc}); choose another place") from None
    return path


def outside_inputs(path: str | os.PathLike, what: str, inputs: dict) -> None:
    """Refuse an output that is one of the inputs ({label: path}, None skipped), or lies inside an input
    folder: results written among the inputs are taken for inputs (or inputs for results)."""
    out = Path(path).resolve()
    for label, given in inputs.items():
        if given is None or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if out == source:
            raise InputError(f"{what} {path} is {label} ({given}); write the results somewhere else, e.g. a new folder")
        if source.is_dir() and source in out.parents:
            raise InputError(f"{what} {path} is inside {label} ({given}); write the results outside the inputs, "
                             "e.g. next to that folder")


def _nearest_existing(path: Path, what: str) -> Path:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{what} {path}: {parent} is a file, not a folder")
            return parent
    return Path("/")


def writable_file(path: str | os.PathLike, *, overwrite: bool = True, what: str = "output",
                  image: bool = False) -> Path:
    """Check before long work that `path` can be written: not a folder, its folder writable,
    (unless `overwrite`) not already there, and (`image`) a name with a known image suffix."""
    path = checks.path(what, path)
    if image:
        image_format(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not overwrite:
        raise InputError(f"{what} {path} already exists; choose another name or allow overwriting")
    writable_folder(path.parent if str(path.parent) else ".", f"the folder of {what} {path}", create=False)
    return path
