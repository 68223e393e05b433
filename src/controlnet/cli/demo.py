"""`controlnet demo`: the built-in miniature model on CPU — condition | without control | with control |
with the condition's outline drawn over it.

Conditions come from held-out samples of the generated world (the models never saw them), so the
demo needs no files beyond the package; the grid shows at a glance whether the ControlNets work.
"""

from __future__ import annotations

import time
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError

DEFAULTS = {"steps": 20, "guidance_scale": 5.0, "weight": 1.0, "scheduler": "ddim"}  # without a recommendation


def make_demo(model: Path, out: Path, samples: int = 3, steps: int | None = None, guidance_scale: float | None = None,
              weight: float | None = None, seed: int = 0, progress: bool = True) -> tuple[Path, list[str]]:
    """Write the demo grid to `out`; returns (path, the conditions shown). Settings left None are
    each ControlNet's recommended ones (`controlnet.recommended`), else 20 DDIM steps, CFG 5, weight 1."""
    from controlnet.assets import HELD_OUT_SEED, available_controlnets, mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.files import save_image
    from controlnet.pipeline import ControlPipeline
    from controlnet.world.grid import GAP, SCALE, check_grid_size, image_grid
    from controlnet.world.world import World

    samples = checks.positive_int("samples", samples)
    _check_output(checks.path("demo grid (-o)", out))
    conditions = available_controlnets(model)
    if not conditions:
        raise InputError(f"{model} has no controlnet-<condition>/ folders to demonstrate")
    given = {"steps": steps, "guidance_scale": guidance_scale, "weight": weight, "scheduler": None}
    settings = {c: _settings(mini_controlnet_dir(c, model), given) for c in conditions}  # a damaged file fails now
    pipe = ControlPipeline.from_pretrained(model)
    size = pipe.vae_scale_factor * pipe.unet.config.sample_size
    check_grid_size(len(conditions) * samples, 4, size * SCALE, size * SCALE, 1, GAP * SCALE)
    world = World(seed=HELD_OUT_SEED, size=size)
    rows = []
    for c, condition in enumerate(conditions):
        # the pipeline runs the ControlNet in the U-Net's dtype (fp32), whatever the file stores
        cn = load_controlnet(mini_controlnet_dir(condition, model))
        picked = [world[c * samples + i] for i in range(samples)]
        settings_c = dict(seed=seed, progress=progress, **settings[condition])
        if condition == "inpaint":  # masked picture | filled without control | with control | mask outline
            from controlnet.mini.inpaint import demo_rows as inpaint_rows

            rows += inpaint_rows(pipe, cn, picked, settings_c)
        else:
            rows += _demo_rows(pipe, cn, condition, picked, settings_c)
    save_image(image_grid(rows, scale=1, gap=GAP * SCALE), out)
    return Path(out), conditions


def _settings(folder: Path, given: dict) -> dict:
    """The sampling settings of one ControlNet's rows: the user's, else its recommended, else defaults."""
    from controlnet import recommended

    return {k: recommended.choose(k, v, [folder], DEFAULTS[k])[0] for k, v in given.items()}


def _demo_rows(pipe, cn, condition: str, picked: list, settings: dict) -> list[list]:
    """One row per world sample: its condition map, the picture without control, with it, and with
    the condition's outline drawn over it (do the picture's edges land where they should?)."""
    import numpy as np

    from controlnet.pipeline import ControlUnit
    from controlnet.world.grid import outline, overlay_outline, upscale

    common = {k: v for k, v in settings.items() if k != "weight"}
    prompts = [s.caption for s in picked]
    maps = [s.conditions[condition] for s in picked]
    plain = pipe(prompts, output_type="np", **common).images
    unit = ControlUnit(cn, maps, resize=None, weight=settings["weight"])
    controlled = pipe(prompts, units=[unit], output_type="np", **common).images
    rows = []
    for m, a, b in zip(maps, plain, controlled):
        a, b = ((x * 255).round().astype(np.uint8) for x in (a, b))
        rows.append([upscale(m), upscale(a), upscale(b), overlay_outline(upscale(b), outline(m, condition))])
    return rows


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
    path, conditions = make_demo(model, args.output, samples=args.samples, steps=args.steps, weight=args.weight,
                                 guidance_scale=args.guidance_scale, seed=args.seed, progress=not args.quiet)
    print(f"rows: {', '.join(conditions)} ({args.samples} held-out world samples each); columns: condition | "
          f"without control | with control | with the condition's outline; {time.perf_counter() - start:.1f} s")
    print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the built-in miniature model with and without its ControlNets, write a grid")
    p.add_argument("-o", "--output", default="controlnet-demo.png", help="grid image to write")
    p.add_argument("--model", default="mini", help="'mini' (built in) or a folder laid out the same way")
    p.add_argument("--samples", type=int, default=3, help="samples per ControlNet")
    p.add_argument("--steps", type=int, help="sampling steps (default: each ControlNet's recommended, else 20)")
    p.add_argument("--cfg", dest="guidance_scale", type=float, help="classifier-free guidance scale (<= 1 turns it "
                   "off; default: each ControlNet's recommended, else 5)")
    p.add_argument("--weight", type=float, help="control weight (default: each ControlNet's recommended, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest for the mini model)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
