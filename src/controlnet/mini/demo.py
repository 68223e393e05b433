"""`controlnet demo`'s grid: the built-in miniature model on held-out world samples — condition |
without control | with control | with the condition's outline drawn over it.

Conditions come from held-out samples of the generated world (the models never saw them), so the
demo needs no files beyond the package; the grid shows at a glance whether the ControlNets work.
"""

from __future__ import annotations

from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError

DEFAULTS = {"steps": 20, "guidance_scale": 5.0, "weight": 1.0, "scheduler": "ddim"}  # without a recommendation


def make_demo(model: Path, out: Path, samples: int = 3, steps: int | None = None, guidance_scale: float | None = None,
              weight: float | None = None, seed: int = 0, progress: bool = True, jobs: int = 1,
              threads: int = 1) -> tuple[Path, list[str]]:
    """Write the demo grid to `out`; returns (path, the conditions shown). Settings left None are
    each ControlNet's recommended ones (`controlnet.recommended`), else 20 DDIM steps, CFG 5, weight 1.
    `jobs` > 1: the ControlNets' rows are sampled in that many forked processes (Linux), each with
    `threads` torch threads; the pictures are the same as in one process."""
    from controlnet.assets import HELD_OUT_SEED, available_controlnets, mini_controlnet_dir
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
    if is_transformer_base(model):  # mini-dit: sampled as `generate` samples a Flux base
        from controlnet.pipeline.dit_batch import DIT_SCHEDULER, load_dit_pipe

        pipe = load_dit_pipe(model)
        size = pipe.picture_size
        settings = {c: {**v, "scheduler": DIT_SCHEDULER} for c, v in settings.items()}
    else:
        pipe = ControlPipeline.from_pretrained(model)
        size = pipe.vae_scale_factor * pipe.unet.config.sample_size
    check_grid_size(len(conditions) * samples, 4, size * SCALE, size * SCALE, 1, GAP * SCALE)
    world = World(seed=HELD_OUT_SEED, size=size)
    tasks = [(condition, mini_controlnet_dir(condition, model), [world[c * samples + i] for i in range(samples)],
              dict(seed=seed, progress=progress and jobs == 1, **settings[condition])) for c, condition in enumerate(conditions)]
    blocks = _run_parallel(pipe, tasks, jobs, threads) if jobs > 1 and _can_fork() else [_condition_rows(pipe, *t) for t in tasks]
    save_image(image_grid([row for block in blocks for row in block], scale=1, gap=GAP * SCALE), out)
    return Path(out), conditions


def is_transformer_base(model: Path) -> bool:
    from controlnet.generation import dit_kind

    return dit_kind(str(model)) is not None


def _condition_rows(pipe, condition: str, folder: Path, picked: list, settings: dict) -> list[list]:
    """One ControlNet's rows of the grid."""
    from controlnet.checkpoints import load_controlnet

    cn = load_controlnet(folder)  # the pipeline runs it in the U-Net's dtype (fp32), whatever the file stores
    if condition == "inpaint":  # masked picture | filled without control | with control | mask outline
        from controlnet.mini.inpaint import demo_rows as inpaint_rows

        return inpaint_rows(pipe, cn, picked, settings)
    return _demo_rows(pipe, cn, condition, picked, settings)


def _can_fork() -> bool:
    """Forked workers share the loaded models for free; only where fork is the safe default (Linux)."""
    import multiprocessing
    import sys

    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


_FORKED: dict = {}  # what the forked workers inherit: the pipeline and the torch thread count


def _run_parallel(pipe, tasks: list, jobs: int, threads: int) -> list[list]:
    """`_condition_rows` of every task in `jobs` forked processes, the longest (inpainting: one call
    per sample) first; results in the tasks' order."""
    import multiprocessing

    _FORKED.update(pipe=pipe, threads=threads)
    order = sorted(range(len(tasks)), key=lambda k: tasks[k][0] != "inpaint")
    try:
        with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            done = dict(zip(order, pool.imap(_forked_rows, [tasks[k] for k in order], chunksize=1)))
    finally:
        _FORKED.clear()
    return [done[k] for k in range(len(tasks))]


def _forked_rows(task) -> list[list]:
    import torch

    torch.set_num_threads(_FORKED["threads"])
    return _condition_rows(_FORKED["pipe"], *task)


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
    unit = getattr(pipe, "make_unit", ControlUnit)(cn, maps, resize=None, weight=settings["weight"])
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
