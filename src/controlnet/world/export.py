"""Write world samples to disk in the two layouts ControlNet trainers read, and read them back.

- fill50k:     prompt.json (JSON lines: source, target, prompt), source/, target/
- imagefolder: metadata.jsonl (diffusers' columns: image, conditioning_image, text), images/,
               conditioning_images/
Both also get truth.jsonl (the ground truth of each sample, line by line) and world.json (how to
regenerate them), so benchmarks can score outputs against the exported samples.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from controlnet import checks
from controlnet.errors import InputError, MissingFileError
from controlnet.files import save_image, writable_folder, write_json, write_text
from controlnet.world.world import World

LAYOUTS = ("fill50k", "imagefolder")
_INDEX = {"fill50k": "prompt.json", "imagefolder": "metadata.jsonl"}
_COLUMNS = {"fill50k": ("target", "source", "prompt"), "imagefolder": ("image", "conditioning_image", "text")}
_FOLDERS = {"fill50k": ("target", "source"), "imagefolder": ("images", "conditioning_images")}
_META = "world.json"


def export(out: str | Path, n: int, layout: str = "fill50k", condition: str = "edges", seed: int = 0,
           size: int = 64, start: int = 0, min_shapes: int = 1, max_shapes: int = 3,
           progress: bool = True) -> Path:
    """Write samples start..start+n-1 of World(seed, size) with one condition kind; returns `out`.

    world.json is written first, marked incomplete, and marked complete after the index: the same
    call resumes an interrupted export, while a folder holding any other export (or a finished one)
    is refused rather than mixed with this one. Every file is written atomically."""
    layout = checks.choice("layout", layout, LAYOUTS)
    n = checks.positive_int("n", n)
    start = checks.integer("start", start, lo=0)
    world = World(seed, size, min_shapes, max_shapes, conditions=(condition,))
    meta = {"layout": layout, "condition": condition, "seed": world.seed, "size": world.size, "start": start,
            "n": n, "min_shapes": world.min_shapes, "max_shapes": world.max_shapes}
    out = _claim(checks.path("output folder", out), meta)
    index, truth = _write_samples(world, out, layout, range(start, start + n), progress)
    write_text(out / "truth.jsonl", truth)
    write_text(out / _INDEX[layout], index)
    write_json(out / _META, {**meta, "complete": True})
    return out


def _claim(out: Path, meta: dict) -> Path:
    """Check `out` before writing anything: a writable folder without another export in it."""
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out} is a file; give a folder (or a new name)")
    stored = _stored_meta(out)
    if stored is not None:
        other = {k: stored.get(k) for k in meta if stored.get(k) != meta[k]}
        if other:
            raise InputError(f"{out} holds an export with other settings ({_settings(other)}); "
                             f"choose an empty folder, or repeat that export's options to resume it")
        if stored.get("complete", True):
            raise InputError(f"{out} already holds this export ({_META}); choose an empty folder")
    else:
        found = [name for name in _export_names() if _holds(out / name)]
        if found:
            raise InputError(f"{out} already holds {', '.join(found)} (another export or dataset); "
                             f"choose an empty folder")
    writable_folder(out, "output folder", create=False)
    write_json(out / _META, {**meta, "complete": False})
    return out


def _stored_meta(out: Path) -> dict | None:
    path = out / _META
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        stored = None
    if not isinstance(stored, dict):
        raise InputError(f"{path} is not a world export's settings file; choose an empty folder")
    return stored


def _export_names() -> list[str]:
    names = [*_INDEX.values(), "truth.jsonl"]
    return names + [folder for layout in LAYOUTS for folder in _FOLDERS[layout]]


def _holds(path: Path) -> bool:
    """A file, or a folder with something in it."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def _settings(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _write_samples(world: World, out: Path, layout: str, indices: range, progress: bool) -> tuple[str, str]:
    """Write each sample's two images; return the index and truth files' text."""
    (condition,) = world.conditions
    image_dir, cond_dir = _FOLDERS[layout]
    image_col, cond_col, text_col = _COLUMNS[layout]
    index, truth = [], []
    for i in tqdm(indices, desc=f"export {layout}/{condition}", disable=not progress):
        sample = world[i]
        name = f"{sample.index}.png"
        save_image(sample.image, out / image_dir / name)
        save_image(sample.conditions[condition], out / cond_dir / name)
        # fill50k's own file lists source, target, prompt; diffusers' lists image first
        row = {cond_col: f"{cond_dir}/{name}", image_col: f"{image_dir}/{name}"}
        if layout == "imagefolder":
            row = {image_col: row[image_col], cond_col: row[cond_col]}
        row[text_col] = sample.caption
        if layout == "imagefolder":
            row["control_type"] = condition  # what a union ControlNet is told (training/control_types.py)
        index.append(json.dumps(row) + "\n")
        truth.append(json.dumps(sample.truth()) + "\n")
    return "".join(index), "".join(truth)


def read_export(folder: str | Path) -> list[dict]:
    """Rows of an export in either layout as {image, condition, text} absolute paths and caption."""
    folder = Path(folder)
    for layout, index in _INDEX.items():
        if (folder / index).is_file():
            return [_read_row(folder, layout, index, k, line)
                    for k, line in enumerate((folder / index).read_text().splitlines(), 1) if line.strip()]
    raise MissingFileError(f"{folder} holds neither prompt.json (fill50k) nor metadata.jsonl (imagefolder)")


def _read_row(folder: Path, layout: str, index: str, number: int, line: str) -> dict:
    image_col, cond_col, text_col = _COLUMNS[layout]
    try:
        row = json.loads(line)
        return {"image": folder / row[image_col], "condition": folder / row[cond_col], "text": row[text_col]}
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{folder / index} line {number} is not a {layout} row with "
                         f"{', '.join(_COLUMNS[layout])}: {line[:80]!r}") from None
