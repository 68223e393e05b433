"""`controlnet demo`: the built-in miniature model on CPU — condition | without control | with control.

Conditions come from held-out samples of the generated world (the models never saw them), so the
demo needs no files beyond the package; the grid shows at a glance whether the ControlNets work.
"""

from __future__ import annotations

import time
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError


def make_demo(model: Path, out: Path, samples: int = 3, steps: int = 20, guidance_scale: float = 5.0, seed: int = 0,
              progress: bool = True) -> tuple[Path, list[str]]:
    """Write the demo grid to `out`; returns (path, the conditions shown)."""
    from controlnet.assets import HELD_OUT_SEED, available_controlnets, mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.files import save_image
    from controlnet.pipeline import ControlPipeline
    from controlnet.world.grid import image_grid
    from controlnet.world.world import World

    samples = checks.positive_int("samples", samples)
    _check_output(checks.path("demo grid (-o)", out))
    conditions = available_controlnets(model)
    if not conditions:
        raise InputError(f"{model} has no controlnet-<condition>/ folders to demonstrate")
    pipe = ControlPipeline.from_pretrained(model)
    world = World(seed=HELD_OUT_SEED, size=pipe.vae_scale_factor * pipe.unet.config.sample_size)
    common = dict(steps=steps, guidance_scale=guidance_scale, seed=seed, output_type="np", progress=progress)
    rows = []
    for c, condition in enumerate(conditions):
        # the pipeline runs the ControlNet in the U-Net's dtype (fp32), whatever the file stores
        cn = load_controlnet(mini_controlnet_dir(condition, model))
        rows += _demo_rows(pipe, cn, condition, [world[c * samples + i] for i in range(samples)], common)
    save_image(image_grid(rows, scale=4), out)
    return Path(out), conditions


def _demo_rows(pipe, cn, condition: str, picked: list, common: dict) -> list[list]:
    """One row per world sample: its condition map, the picture without control, and with it."""
    import numpy as np

    from controlnet.pipeline import ControlUnit

    prompts = [s.caption for s in picked]
    maps = [s.conditions[condition] for s in picked]
    plain = pipe(prompts, **common).images
    controlled = pipe(prompts, units=[ControlUnit(cn, maps, resize=None)], **common).images
    return [[m, (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)]
            for m, a, b in zip(maps, plain, controlled)]


def _check_output(out: Path) -> None:
    """The grid can be written there, checked before any sampling."""
    from controlnet.files import IMAGE_FORMATS, writable_file

    writable_file(out, what="demo grid (-o)")
    if out.suffix.lower() not in IMAGE_FORMATS:
        raise InputError(f"-o {out}: unknown image suffix {out.suffix!r}; use one of {', '.join(sorted(IMAGE_FORMATS))}")


def run(args) -> int:
    import torch

    from controlnet.assets import resolve_model
    from controlnet.cli import quiet_libraries

    quiet_libraries()
    # A model this small gains nothing from intra-op threads, and they thrash when the CPU is busy.
    torch.set_num_threads(checks.positive_int("--threads", args.threads))
    start = time.perf_counter()
    model = resolve_model(args.model)
    path, conditions = make_demo(model, args.output, samples=args.samples, steps=args.steps,
                                 guidance_scale=args.guidance_scale, seed=args.seed, progress=not args.quiet)
    print(f"rows: {', '.join(conditions)} ({args.samples} held-out world samples each); "
          f"columns: condition | without control | with control; {time.perf_counter() - start:.1f} s")
    print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the built-in miniature model with and without its ControlNets, write a grid")
    p.add_argument("-o", "--output", default="controlnet-demo.png", help="grid image to write")
    p.add_argument("--model", default="mini", help="'mini' (built in) or a folder laid out the same way")
    p.add_argument("--samples", type=int, default=3, help="samples per ControlNet")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", dest="guidance_scale", type=float, default=5.0, help="classifier-free guidance scale (<= 1 turns it off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for the mini model)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
