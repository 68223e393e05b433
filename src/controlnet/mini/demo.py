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


def is_transformer_base(model: Path) -> bool:
    from controlnet.generation import dit_kind

    return dit_kind(str(model)) is not None


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
