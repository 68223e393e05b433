"""PNG parameters: what a generated picture stores (our JSON in the `controlnet` text chunk, and
A1111's `parameters` line), read back and applied to replay it. Below the CLI and the server, which
both write them."""

from __future__ import annotations

import json
from pathlib import Path

from controlnet.errors import InputError, MissingFileError

# schedule, schedule_interpolation: strength schedules (controlnet.pipeline.schedule)
UNIT_DEFAULTS = {"image": None, "weight": 1.0, "start": 0.0, "end": 1.0, "mode": "balanced", "preprocess": None, "mask": None,
                 "schedule": None, "schedule_interpolation": "hold"}
UNIT_KEYS = tuple(UNIT_DEFAULTS)
CHUNK = "controlnet"
ARG_OF_KEY = {"cfg": "guidance_scale"}  # the PNG keeps the name users know (A1111: "CFG scale")
STORED_KEYS = ("model", "config", "prompt", "negative_prompt", "steps", "cfg", "scheduler", "eta", "seed", "num_images",
               "width", "height", "resize", "init_image", "strength", "dtype", "inpaint_mask", "inpaint_mode", "mask_blur")
STORED_STRINGS = ("model", "config", "prompt", "negative_prompt", "scheduler", "resize", "init_image", "dtype",
                  "inpaint_mask", "inpaint_mode")
UNIT_STRINGS = ("controlnet", "image", "mode", "preprocess", "mask")


def parameters(args) -> dict:
    """Everything needed to sample again, with absolute paths."""
    def path(v):
        return str(Path(v).resolve()) if v else None

    units = [{"controlnet": path(u["controlnet"]), **{k: (path(u[k]) if k in ("image", "mask") else u[k]) for k in UNIT_KEYS}}
             for u in args.units]
    return {
        "model": path(args.model), "config": path(args.config), "prompt": args.prompt, "negative_prompt": args.negative_prompt,
        "steps": args.steps, "cfg": args.guidance_scale, "scheduler": args.scheduler, "eta": args.eta, "seed": args.seed,
        "num_images": args.num_images, "width": args.width, "height": args.height, "resize": args.resize,
        "init_image": path(args.init_image), "strength": args.strength, "dtype": args.dtype, "units": units,
        "inpaint_mask": path(args.inpaint_mask), "inpaint_mode": args.inpaint_mode, "mask_blur": args.mask_blur,
    }


def read_parameters(png: str) -> dict:
    """The parameters stored in a PNG written by `controlnet generate`, checked enough to be applied."""
    from PIL import Image

    if not Path(png).is_file():
        raise MissingFileError(f"--from: {png} not found")
    try:
        with Image.open(png) as im:
            text = dict(getattr(im, "text", None) or im.info)
    except (OSError, Image.DecompressionBombError) as exc:
        raise InputError(f"--from: cannot read {png} as an image ({exc})") from None
    if CHUNK not in text:
        raise InputError(f"--from: {png} has no '{CHUNK}' text chunk; it was not written by controlnet generate")
    try:
        stored = json.loads(text[CHUNK])
    except (TypeError, ValueError) as exc:
        raise InputError(f"--from: the '{CHUNK}' chunk of {png} is not valid JSON ({exc}); the file was edited or damaged") from None
    wrong = _malformed(stored)
    if wrong:
        raise InputError(f"--from: the '{CHUNK}' chunk of {png} is damaged ({wrong}); give the options on the command line instead")
    return stored


def _malformed(stored) -> str:
    """What is wrong with stored parameters ("" when nothing): their values go on to paths and names."""
    if not isinstance(stored, dict):
        return f"a JSON {type(stored).__name__}, not an object"
    wrong = [k for k in STORED_STRINGS if stored.get(k) is not None and not isinstance(stored[k], str)]
    units = stored.get("units", [])
    if not isinstance(units, list) or not all(isinstance(u, dict) and isinstance(u.get("controlnet"), str) for u in units):
        return "units is not a list of units with a controlnet path"
    wrong += [f"units[{i}].{k}" for i, u in enumerate(units) for k in UNIT_STRINGS if u.get(k) is not None and not isinstance(u[k], str)]
    return f"{', '.join(wrong)} should be text" if wrong else ""


def apply_parameters(args, stored: dict) -> None:
    """Stored parameters replace the command line's (unknown keys, e.g. a newer version's, are ignored)."""
    for key, value in stored.items():
        if key == "units":
            args.units = [{**UNIT_DEFAULTS, **{k: v for k, v in u.items() if k in UNIT_KEYS or k == "controlnet"},
                           **{f"_{k}_set": True for k in ("weight", "mode") if k in u}} for u in value]
        elif key in STORED_KEYS:
            setattr(args, ARG_OF_KEY.get(key, key), value)


def a1111_line(params: dict) -> str:
    """The human-readable summary A1111 users know, for image viewers."""
    head = [params["prompt"]]
    if params["negative_prompt"]:
        head.append(f"Negative prompt: {params['negative_prompt']}")
    fields = [f"Steps: {params['steps']}", f"Sampler: {params['scheduler']}", f"CFG scale: {params['cfg']}",
              f"Seed: {params['seed']}", f"Size: {params['width']}x{params['height']}", f"Model: {Path(params['model']).name}"]
    for i, u in enumerate(params["units"]):
        fields.append(f"ControlNet {i}: \"model: {Path(u['controlnet']).name}, module: {u['preprocess'] or 'none'}, "
                      f"weight: {u['weight']}, guidance_start: {u['start']}, guidance_end: {u['end']}, "
                      f"control_mode: {u['mode']}{_schedule_field(u)}, resize_mode: {params['resize']}\"")
    return "\n".join(head) + "\n" + ", ".join(fields)


def _schedule_field(unit: dict) -> str:
    """A unit's strength schedule in the A1111 line; nothing without one."""
    from controlnet.pipeline.schedule import check_schedule, format_schedule

    if unit.get("schedule") is None:
        return ""
    return f", schedule: {format_schedule(check_schedule(unit['schedule']))} ({unit.get('schedule_interpolation') or 'hold'})"


def png_info(params: dict):
    """The PNG text chunks of a generated picture: our JSON (for --from) and A1111's line (for viewers)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK, json.dumps(params))
    info.add_text("parameters", a1111_line(params))
    return info
