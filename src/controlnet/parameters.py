"""PNG parameters: what a generated picture stores (our JSON in the `controlnet` text chunk, and
A1111's `parameters` line), read back and applied to replay it. Below the CLI and the server, which
both write them."""

from __future__ import annotations

import json
from pathlib import Path

from controlnet.errors import InputError, MissingFileError

# schedule, schedule_interpolation: strength schedules (controlnet.pipeline.schedule); processor_res,
# preprocess_params, pixel_perfect: how --preprocess ran (None: the command's defaults)
UNIT_DEFAULTS = {"image": None, "weight": 1.0, "start": 0.0, "end": 1.0, "mode": "balanced", "preprocess": None, "mask": None,
                 "schedule": None, "schedule_interpolation": "hold", "processor_res": None, "preprocess_params": None,
                 "pixel_perfect": None, "control_type": None}
UNIT_KEYS = tuple(UNIT_DEFAULTS)
CHUNK = "controlnet"
ARG_OF_KEY = {"cfg": "guidance_scale"}  # the PNG keeps the name users know (A1111: "CFG scale")
STORED_KEYS = ("model", "config", "prompt", "negative_prompt", "steps", "cfg", "scheduler", "eta", "seed", "num_images",
               "width", "height", "resize", "init_image", "strength", "dtype", "inpaint_mask", "inpaint_mode", "mask_blur",
               "true_cfg", "approx", "control_image", "control_lora")
STORED_STRINGS = ("model", "config", "prompt", "negative_prompt", "scheduler", "resize", "init_image", "dtype",
                  "inpaint_mask", "inpaint_mode", "control_image", "control_lora")
UNIT_STRINGS = ("controlnet", "image", "mode", "preprocess", "mask", "control_type")
UNIT_IMAGES = ("image", "mask")  # paths a replay may take from the command line instead
# A1111 sampler names -> ours (controlnet.pipeline.schedulers); "DPM++ 2M Karras" is A1111's older label
A1111_SAMPLERS = {"Euler a": "euler_a", "Euler": "euler", "LMS": "lms", "Heun": "heun", "DPM2": "dpm2", "DPM2 a": "dpm2_a",
                  "DPM++ 2S a": "dpmpp_2s_a", "DPM++ 2M": "dpmpp_2m", "DPM++ 2M Karras": "dpmpp_2m_karras", "DDIM": "ddim",
                  "PLMS": "pndm", "UniPC": "unipc", "DEIS": "deis", "DDPM": "ddpm"}
KARRAS = {"dpmpp_2m_karras": "dpmpp_2m"}  # ours with Karras sigmas -> the sampler A1111 names with "Schedule type: Karras"
RESIZE_LABELS = {"just_resize": "Just Resize", "crop_and_resize": "Crop and Resize", "resize_and_fill": "Resize and Fill"}
MODE_LABELS = {"balanced": "Balanced", "prompt": "My prompt is more important", "control": "ControlNet is more important"}


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
        "true_cfg": getattr(args, "true_cfg", None), "approx": getattr(args, "approx", None) or None,
        "control_image": path(getattr(args, "control_image", None)),
        "control_lora": path(getattr(args, "control_lora", None)),
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
    if stored.get("approx") is not None and not isinstance(stored["approx"], dict):
        return "approx is not an object of approximate modes"
    kinds = {"processor_res": int, "preprocess_params": dict, "pixel_perfect": bool}
    odd = [f"units[{i}].{k}" for i, u in enumerate(units) for k, kind in kinds.items()
           if u.get(k) is not None and (not isinstance(u[k], kind) or (kind is int and isinstance(u[k], bool)))]
    if not isinstance(stored.get("unstored", []), list) or not all(isinstance(k, str) for k in stored.get("unstored", [])):
        odd.append("unstored")
    if odd:
        return f"{', '.join(odd)} has the wrong type"
    return f"{', '.join(wrong)} should be text" if wrong else ""


def apply_parameters(args, stored: dict) -> None:
    """Stored parameters replace the command line's (unknown keys, e.g. a newer version's, are
    ignored), except the pictures it gives: `--image`/`--mask` without `--controlnet` are the stored
    units' pictures in order, `--init-image`/`--inpaint-mask` the stored ones (a picture made by the
    server stores no paths: its inputs were uploads)."""
    given = args.units
    if any(u["controlnet"] is not None for u in given):
        raise InputError("--from replays the stored units: give their pictures with --image IMG (in unit order) after "
                         "--from, without --controlnet")
    for key, value in stored.items():
        if key == "units":
            args.units = [{**UNIT_DEFAULTS, **{k: v for k, v in u.items() if k in UNIT_KEYS or k == "controlnet"},
                           **{f"_{k}_set": True for k in ("weight", "mode") if k in u}} for u in value]
        elif key in STORED_KEYS and not (key in ("init_image", "inpaint_mask", "control_image") and getattr(args, key)):
            setattr(args, ARG_OF_KEY.get(key, key), value)
    if len(given) > len(args.units):
        raise InputError(f"--from: {len(given)} units' pictures given (--image), the picture has {len(args.units)} unit(s)")
    for unit, mine in zip(args.units, given):
        unit.update({k: mine[k] for k in UNIT_IMAGES if mine.get(f"_{k}_set")})
    _check_pictures(args, stored)


def _check_pictures(args, stored: dict) -> None:
    """Every picture the stored run read is there: stored, or given on the command line."""
    flags = {"init_image": "--init-image", "inpaint_mask": "--inpaint-mask", "control_image": "--control-image"}
    missing = [f"unit {i + 1}'s condition image (--image IMG)" for i, u in enumerate(args.units) if not u["image"]]
    missing += [f"the {k.replace('_', ' ')} ({flags[k]} IMG)" for k in stored.get("unstored", []) if k in flags and not getattr(args, k)]
    if missing:
        raise InputError(f"--from: the PNG does not store {', '.join(missing)} (pictures sent to the server are not "
                         "kept); give them after --from, --image in unit order")


def replay(args, png: str) -> list[str]:
    """`--from PNG`: its stored parameters applied to the command's (`apply_parameters`); returns
    what the replay cannot reproduce, to be said before sampling."""
    stored = read_parameters(png)
    apply_parameters(args, stored)
    return replay_notes(stored)


def replay_notes(stored: dict) -> list[str]:
    """What a replay cannot reproduce (said, not refused: the settings are still worth reusing)."""
    stop = stored.get("interrupted")
    if not stop:
        return []
    return [f"--from: this picture was interrupted at step {stop.get('step', '?') if isinstance(stop, dict) else '?'} of "
            f"{stored.get('steps')}; the replay runs every step, so it will not be the same picture"]


def a1111_line(params: dict) -> str:
    """A1111's infotext (its `parameters` chunk), so its PNG Info and sd-webui-controlnet restore the
    settings and the units: fields as A1111 writes them, each unit as `ControlNet i: "Module: ..."`."""
    head = [params["prompt"]]
    if params["negative_prompt"]:
        head.append(f"Negative prompt: {params['negative_prompt']}")
    sampler, schedule = sampler_label(params["scheduler"])
    fields = {"Steps": params["steps"], "Sampler": sampler, "Schedule type": schedule, "CFG scale": _number(params["cfg"]),
              "Seed": params["seed"], "Size": f"{params['width']}x{params['height']}", "Model": model_label(params["model"])}
    if params.get("init_image") or "init_image" in params.get("unstored", []):
        default = 1.0 if params.get("inpaint_mask") else 0.75  # generate's --strength default
        fields["Denoising strength"] = _number(params["strength"] if params["strength"] is not None else default)
    for i, u in enumerate(params["units"]):
        index = u.get("index", i)  # the server's: the unit's place among the request's units
        fields[f"ControlNet {index}"] = unit_infotext(u, u.get("resize") or params["resize"])
        if u.get("schedule") is not None:
            fields[f"Strength schedule {index}"] = _schedule_text(u)
    if params.get("interrupted"):
        stop = params["interrupted"]
        fields["Interrupted"] = f"at step {stop.get('step')} of {params['steps']}" if isinstance(stop, dict) else "True"
    return "\n".join(head) + "\n" + ", ".join(f"{k}: {_quote(v)}" for k, v in fields.items() if v is not None)


def unit_infotext(unit: dict, resize: str | None) -> str:
    """One unit as sd-webui-controlnet's infotext writes it (`scripts/infotext.py`: its unit fields in
    order, "Field Name: value", sliders a module does not use left out)."""
    res, a, b = _slider_values(unit)
    fields = {"Module": unit.get("preprocess") or "none", "Model": model_label(unit["controlnet"]),
              "Weight": _number(unit["weight"]), "Resize Mode": RESIZE_LABELS.get(resize or "", "Just Resize"),
              "Processor Res": res, "Threshold A": a, "Threshold B": b, "Guidance Start": _number(unit["start"]),
              "Guidance End": _number(unit["end"]), "Pixel Perfect": bool(unit.get("pixel_perfect")),
              "Control Mode": MODE_LABELS.get(unit["mode"], unit["mode"]), "Union Control Type": unit.get("control_type")}
    return ", ".join(f"{k}: {_plain(v)}" for k, v in fields.items() if v is not None)


def _slider_values(unit: dict) -> tuple:
    """(Processor Res, Threshold A, Threshold B) of a unit's preprocessor; None for what it does not use."""
    name = unit.get("preprocess")
    if not name or name == "inpaint":
        return None, None, None
    try:
        from controlnet.annotators import get_annotator

        spec = get_annotator(name)
    except (ImportError, InputError):
        return None, None, None
    params = unit.get("preprocess_params") or {}
    values = [_number(params.get(p.name, p.default)) for p in spec.threshold_params()] + [None, None]
    res = unit.get("processor_res") or 512
    return (res if spec.uses_resolution else None), values[0], values[1]


def sampler_label(scheduler) -> tuple[str, str]:
    """(A1111's Sampler, its Schedule type) of one of our scheduler names (A1111 1.9+ writes both)."""
    name = str(scheduler or "default").strip().lower().replace("-", "_").replace("++", "pp")
    labels = {ours: label for label, ours in A1111_SAMPLERS.items() if ours not in KARRAS}
    if name in KARRAS:
        return labels[KARRAS[name]], "Karras"
    return labels.get({"euler_ancestral": "euler_a", "uni_pc": "unipc"}.get(name, name), str(scheduler)), "Automatic"


def model_label(ref: str | None) -> str | None:
    """A model as A1111 lists it: a file's stem or a folder's name; the built-in `mini:edges` (or its
    folder) as the server lists it, `mini-edges`."""
    if not ref:
        return None
    if ref.startswith("mini:"):
        return "mini-" + ref.removeprefix("mini:")
    from controlnet.assets import MINI_DIR

    path, builtin = Path(ref).resolve(), MINI_DIR.resolve()
    if path == builtin:
        return "mini"
    if path.parent == builtin and path.name.startswith("controlnet-"):
        return "mini-" + path.name.removeprefix("controlnet-")
    return path.stem if path.suffix.lower() in (".safetensors", ".pth", ".ckpt", ".bin", ".pt") else path.name


def _number(value):
    """1.0 -> 1, 0.25 -> 0.25: numbers as A1111's infotext shows them."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _plain(value) -> str:
    """A unit field's value: sd-webui-controlnet's parser splits on ',' and ': ', so neither may appear."""
    return str(value).replace(",", " ").replace(":", "-")


def _quote(value) -> str:
    """A1111's `quote`: a value with ',', ':' or a newline is written as a JSON string."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ",:\n") else text


def _schedule_text(unit: dict) -> str:
    """A unit's strength schedule (keyframes, interpolation) for the infotext."""
    from controlnet.pipeline.schedule import check_schedule, format_schedule

    return f"{format_schedule(check_schedule(unit['schedule']))} ({unit.get('schedule_interpolation') or 'hold'})"


def png_info(params: dict):
    """The PNG text chunks of a generated picture: our JSON (for --from) and A1111's line (for viewers)."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(CHUNK, json.dumps(params))
    info.add_text("parameters", a1111_line(params))
    return info
