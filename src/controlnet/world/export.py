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

from PIL import Image
from tqdm import tqdm

from controlnet.errors import InputError, MissingFileError
from controlnet.world.render import CONDITIONS
from controlnet.world.world import World

LAYOUTS = ("fill50k", "imagefolder")
_INDEX = {"fill50k": "prompt.json", "imagefolder": "metadata.jsonl"}
_COLUMNS = {"fill50k": ("target", "source", "prompt"), "imagefolder": ("image", "conditioning_image", "text")}
_FOLDERS = {"fill50k": ("target", "source"), "imagefolder": ("images", "conditioning_images")}


def export(out: str | Path, n: int, layout: str = "fill50k", condition: str = "edges", seed: int = 0,
           size: int = 64, start: int = 0, min_shapes: int = 1, max_shapes: int = 3,
           progress: bool = True) -> Path:
    """Write samples start..start+n-1 of World(seed, size) with one condition kind; returns `out`."""
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if condition not in CONDITIONS:
        raise InputError(f"unknown condition {condition!r}; choose one of {', '.join(CONDITIONS)}")
    if n < 1:
        raise InputError(f"--n must be at least 1, got {n}")
    out = Path(out)
    if (out / _INDEX[layout]).exists():
        raise InputError(f"{out} already holds an export ({_INDEX[layout]}); choose an empty folder")
    image_dir, cond_dir = (out / f for f in _FOLDERS[layout])
    image_dir.mkdir(parents=True, exist_ok=True)
    cond_dir.mkdir(parents=True, exist_ok=True)
    world = World(seed, size, min_shapes, max_shapes, conditions=(condition,))
    image_col, cond_col, text_col = _COLUMNS[layout]
    with open(out / _INDEX[layout], "w") as index, open(out / "truth.jsonl", "w") as truth:
        for sample in tqdm(world.take(n, start), total=n, desc=f"export {layout}/{condition}",
                           disable=not progress):
            name = f"{sample.index}.png"
            Image.fromarray(sample.image).save(image_dir / name)
            Image.fromarray(sample.conditions[condition]).save(cond_dir / name)
            # fill50k's own file lists source, target, prompt; diffusers' lists image first
            row = {cond_col: f"{cond_dir.name}/{name}", image_col: f"{image_dir.name}/{name}"}
            if layout == "imagefolder":
                row = {image_col: row[image_col], cond_col: row[cond_col]}
            row[text_col] = sample.caption
            index.write(json.dumps(row) + "\n")
            truth.write(json.dumps(sample.truth()) + "\n")
    meta = {"layout": layout, "condition": condition, "seed": seed, "size": size, "start": start, "n": n,
            "min_shapes": min_shapes, "max_shapes": max_shapes}
    (out / "world.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_export(folder: str | Path) -> list[dict]:
    """Rows of an export in either layout as {image, condition, text} absolute paths and caption."""
    folder = Path(folder)
    for layout, index in _INDEX.items():
        if (folder / index).exists():
            image_col, cond_col, text_col = _COLUMNS[layout]
            rows = [json.loads(line) for line in (folder / index).read_text().splitlines() if line.strip()]
            return [{"image": folder / r[image_col], "condition": folder / r[cond_col], "text": r[text_col]}
                    for r in rows]
    raise MissingFileError(f"{folder} holds neither prompt.json (fill50k) nor metadata.jsonl (imagefolder)")
