"""`controlnet generate` over folders: a unit's `--image` is a folder, one output per picture.

Outputs are named after the input (`a.png` -> `OUT/a.png`); a name whose outputs all exist is
skipped, so an interrupted batch resumes (every file is written atomically, so existing means
complete). A picture that fails (a damaged file, say) is reported and the batch goes on; the
summary counts done / skipped / failed and the exit code is 1 if any failed. The models are
loaded once, before the first picture that needs them.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

from controlnet.errors import InputError


def is_batch(args) -> bool:
    return any(u["image"] and Path(u["image"]).is_dir() for u in args.units)


def batch_items(args) -> list:
    """The batch's items; up-front errors (empty or image-less folders, names that do not pair) stop it."""
    from controlnet.pipeline.batch import pair_sources

    for u in args.units:
        if not u["image"]:
            raise InputError(f"the unit of --controlnet {u['controlnet']} has no --image")
    labels = [f"unit {i + 1}'s --image folder" for i in range(len(args.units))]
    return pair_sources([u["image"] for u in args.units], labels)


def _item_args(args, item):
    """The command's options with this item's pictures as the units' images (also what its PNGs store)."""
    one = copy.copy(args)
    one.units = [{**u, "image": str(path)} for u, path in zip(args.units, item.images)]
    return one


def _save(out, args, paths: list[Path]) -> None:
    """Each picture under its input's name, carrying its parameters (so --from re-creates it)."""
    from tqdm.auto import tqdm

    import controlnet
    from controlnet.files import save_image
    from controlnet.parameters import parameters, png_info

    base = parameters(args)
    base.update(width=out.images[0].width, height=out.images[0].height, num_images=1, version=controlnet.__version__)
    for path, image, seed in zip(paths, out.images, out.seeds):
        save_image(image, path, pnginfo=png_info({**base, "seed": seed}))
        tqdm.write(str(path), file=sys.stdout)


def run_batch(args, outdir: Path, models, sample) -> int:
    """Sample every item not yet done; report failures per file; 1 if any failed, else 0. `models`
    (loaded once) and `sample(args, models)` are the command's own (passed in, so this module does
    not import it back)."""
    from tqdm.auto import tqdm

    from controlnet.cli import describe_error

    items = batch_items(args)
    todo = [it for it in items if not it.done(outdir, args.num_images)]
    failed = []
    if todo:
        models.load(args)  # a base model that does not load stops the batch (exit 2), not each picture
    for item in tqdm(todo, desc="batch", unit="picture", file=sys.stderr, disable=not todo):
        one = _item_args(args, item)
        try:
            _save(sample(one, models), one, item.outputs(outdir, args.num_images))
        except Exception as exc:  # noqa: BLE001 - one picture's failure (described as the CLI would) must not end the batch
            failed.append((item, describe_error(exc)[0]))
            tqdm.write(f"failed: {item.name}: {failed[-1][1]}", file=sys.stderr)
    print(f"batch: {len(todo) - len(failed)} done, {len(items) - len(todo)} skipped (already there), "
          f"{len(failed)} failed, of {len(items)}")
    for item, message in failed:
        print(f"failed: {', '.join(str(p) for p in item.images)}: {message}", file=sys.stderr)
    return 1 if failed else 0
