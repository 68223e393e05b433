"""`controlnet generate` over folders: a unit's `--image` is a folder, one output per picture.

Outputs are named after the input (`a.png` -> `OUT/a.png`); a name whose outputs all exist is
skipped, so an interrupted batch resumes (every file is written atomically, so existing means
complete). A picture that fails (a damaged file, say) is reported and the batch goes on; the
summary counts done / skipped / failed and the exit code is 1 if any failed. The models are
loaded once, before the first picture that needs them.
"""

from __future__ import annotations

import sys
from pathlib import Path


def run_batch(args, outdir: Path) -> int:
    """Sample every item not yet done; report failures per file; 1 if any failed, else 0. The models
    are loaded once (`controlnet.generation.Models`)."""
    from tqdm.auto import tqdm

    from controlnet.cli import describe_error
    from controlnet.files import outside_inputs
    from controlnet.generation import Models, batch_items, item_job, sample, save_item

    outside_inputs(outdir, "the output folder (-o)",
                   {f"unit {i + 1}'s --image folder": u["image"] for i, u in enumerate(args.units)})
    items = batch_items(args)
    todo = [it for it in items if not it.done(outdir, args.num_images)]
    failed = []
    models = Models(progress=False)
    if todo:
        models.load(args)  # a base model that does not load stops the batch (exit 2), not each picture
    for item in tqdm(todo, desc="batch", unit="picture", file=sys.stderr, disable=not todo):
        one = item_job(args, item)
        try:
            for path in save_item(sample(one, models), one, item.outputs(outdir, args.num_images)):
                tqdm.write(str(path), file=sys.stdout)
        except Exception as exc:  # noqa: BLE001 - one picture's failure (described as the CLI would) must not end the batch
            failed.append((item, describe_error(exc)[0]))
            tqdm.write(f"failed: {item.name}: {failed[-1][1]}", file=sys.stderr)
    print(f"batch: {len(todo) - len(failed)} done, {len(items) - len(todo)} skipped (already there), "
          f"{len(failed)} failed, of {len(items)}")
    for item, message in failed:
        print(f"failed: {', '.join(str(p) for p in item.images)}: {message}", file=sys.stderr)
    return 1 if failed else 0
