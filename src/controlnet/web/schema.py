"""A1111 / sd-webui-controlnet request bodies -> checked requests for the engine.

Field names and defaults are A1111's (`enabled` defaults to false; `control_mode` and
`resize_mode` as strings or the old integers; legacy aliases such as `input_image`). Each value
is checked here, before the job is queued, and an error names the field as the client wrote it;
the pipeline (ControlUnit, ControlPipeline) checks again what it owns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controlnet import checks
from controlnet.errors import InputError
from controlnet.images import resize_mode as canonical_resize
from controlnet.web import modules
from controlnet.web.guard import Limits
from controlnet.web.inputs import FieldError, decode_image

UNITS_FIELD = "alwayson_scripts.controlnet.args"
UNIT_ALIASES = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram", "mask_image": "mask"}
CONTROL_MODES = {"balanced": "balanced", "my prompt is more important": "prompt", "controlnet is more important": "control",
                 "0": "balanced", "1": "prompt", "2": "control", "prompt": "prompt", "control": "control", "cfg_rw": "cfg_rw"}
RESIZE_INTS = {0: "just_resize", 1: "crop_and_resize", 2: "resize_and_fill", 3: "just_resize"}
# A1111 sampler names -> ours (controlnet.pipeline.schedulers)
SAMPLERS = {"Euler a": "euler_a", "Euler": "euler", "LMS": "lms", "Heun": "heun", "DPM2": "dpm2", "DPM2 a": "dpm2_a",
            "DPM++ 2S a": "dpmpp_2s_a", "DPM++ 2M": "dpmpp_2m", "DPM++ 2M Karras": "dpmpp_2m_karras", "DDIM": "ddim",
            "PLMS": "pndm", "UniPC": "unipc", "DEIS": "deis", "DDPM": "ddpm"}


@dataclass
class UnitRequest:
    index: int
    field: str
    model: str  # a name from the model list
    image: np.ndarray | None  # None: img2img uses the init image
    module: str | None
    resolution: int
    params: dict
    pixel_perfect: bool
    weight: float
    start: float
    end: float
    mode: str
    resize: str
    region_mask: np.ndarray | None = None
    layer_scales: list | None = None
    save_map: bool = True


@dataclass
class GenerationRequest:
    kind: str  # txt2img | img2img
    prompt: str
    negative_prompt: str
    seed: int | None
    steps: int
    cfg: float
    sampler: str
    sampler_label: str
    eta: float
    width: int
    height: int
    batch_size: int
    n_iter: int
    units: list[UnitRequest]
    init_image: np.ndarray | None = None
    strength: float = 0.75
    echo: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def steps_run(self) -> int:
        """Sampling steps per batch: img2img runs the last `strength` of the schedule."""
        return min(int(self.steps * self.strength), self.steps) if self.init_image is not None else self.steps


@dataclass
class DetectRequest:
    module: str
    images: list[np.ndarray]
    resolution: int
    params: dict
    warnings: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------- values


def _number(name: str, body: dict, default, lo=None, hi=None) -> float:
    value = body.get(name, default)
    value = default if value is None else value
    try:
        return checks.number(name, value, lo=lo, hi=hi)
    except InputError as exc:
        raise FieldError(name, str(exc).removeprefix(f"{name} ")) from None


def _int(name: str, body: dict, default, lo=None, hi=None) -> int:
    value = body.get(name, default)
    value = default if value is None else value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    try:
        return checks.integer(name, value, lo=lo, hi=hi)
    except InputError as exc:
        raise FieldError(name, str(exc).removeprefix(f"{name} ")) from None


def _text(name: str, body: dict, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise FieldError(name, f"must be text, got {type(value).__name__}")
    return value


def _bool(name: str, value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise FieldError(name, f"must be true or false, got {value!r}")


def sampler_name(body: dict) -> tuple[str, str]:
    """(our scheduler name, the label A1111 reports) from sampler_name / sampler_index (+ scheduler 'Karras')."""
    from controlnet.pipeline.schedulers import ALIASES, SCHEDULERS

    label = body.get("sampler_name") or body.get("sampler_index") or "DDIM"
    if not isinstance(label, str):
        raise FieldError("sampler_name", f"must be a sampler name (text), got {label!r}")
    ours = {k.lower(): v for k, v in SAMPLERS.items()}.get(label.strip().lower())
    ours = ours or ALIASES.get(label.strip().lower(), label.strip().lower())
    if ours == "dpmpp_2m" and str(body.get("scheduler", "")).lower() == "karras":
        ours = "dpmpp_2m_karras"
    if ours not in SCHEDULERS:
        raise FieldError("sampler_name", f"unknown sampler {label!r}; GET /sdapi/v1/samplers lists them: {', '.join(SAMPLERS)}")
    return ours, label


# ---------------------------------------------------------------------------------------- units


def control_mode(name: str, value) -> str:
    key = str(value).strip().lower() if not isinstance(value, bool) else "?"
    if key not in CONTROL_MODES:
        raise FieldError(name, f"unknown control mode {value!r}; use 'Balanced', 'My prompt is more important', "
                               "'ControlNet is more important' (or 0/1/2)")
    return CONTROL_MODES[key]


def resize(name: str, value) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value not in RESIZE_INTS:
            raise FieldError(name, f"unknown resize mode {value}; use 0 (Just Resize), 1 (Crop and Resize), 2 (Resize and Fill)")
        return RESIZE_INTS[value]
    try:
        mode = canonical_resize(str(value).split(" (")[0])
    except InputError as exc:
        raise FieldError(name, str(exc)) from None
    if mode is None:
        raise FieldError(name, "resize mode 'none' is not offered here; use Just Resize, Crop and Resize or Resize and Fill")
    return mode


def _unit_image(name: str, value, max_pixels: int):
    """A1111's image forms: a base64 string, {"image", "mask"}, [image, mask]; "" or null = none."""
    if isinstance(value, dict):
        value = value.get("image")
    elif isinstance(value, list):
        if len(value) not in (1, 2):
            raise FieldError(name, "give one image (a list of several images is not supported)")
        value = value[0]
    if value is None or value == "":
        return None
    return decode_image(name, value, max_pixels)


def parse_unit(index: int, raw, catalog, limits: Limits, warnings: list) -> UnitRequest | None:
    """One sd-webui-controlnet unit; None when it is not enabled."""
    where = f"{UNITS_FIELD}[{index}]"
    if not isinstance(raw, dict):
        raise FieldError(where, f"must be a unit object, got {type(raw).__name__}")
    u = {UNIT_ALIASES.get(k.lower(), k.lower()): v for k, v in raw.items()}
    if not _bool(f"{where}.enabled", u.get("enabled"), False):
        return None
    model = catalog.find_controlnet(u.get("model"))
    if model is None:
        raise FieldError(f"{where}.model", f"unknown ControlNet {u.get('model')!r}; GET /controlnet/model_list lists them: "
                                           f"{', '.join(catalog.controlnet_titles()) or '(none)'}")
    module = modules.resolve(f"{where}.module", u.get("module"))
    if u.get("mask") not in (None, ""):
        raise FieldError(f"{where}.mask", "the unit mask is the inpaint preprocessors' mask, which this server does not offer; "
                                          "to limit a unit to a region send effective_region_mask")
    resolution, params = (512, {}) if module is None else modules.bind_sliders(
        where, module, u.get("processor_res"), u.get("threshold_a"), u.get("threshold_b"), warnings)
    mode = control_mode(f"{where}.control_mode", u.get("control_mode", "Balanced"))
    if u.get("guessmode"):
        mode = "control"
    start = _prefixed(where, lambda: _number("guidance_start", u, 0.0, 0.0, 1.0))
    end = _prefixed(where, lambda: _number("guidance_end", u, 1.0, 0.0, 1.0))
    return UnitRequest(
        index=index, field=where, model=model,
        image=_unit_image(f"{where}.image", u.get("image"), limits.max_input_pixels),
        module=module, resolution=resolution, params=params,
        pixel_perfect=_bool(f"{where}.pixel_perfect", u.get("pixel_perfect"), False),
        weight=_prefixed(where, lambda: _number("weight", u, 1.0, 0.0, 2.0)),
        start=start, end=end, mode=mode,
        resize=resize(f"{where}.resize_mode", u.get("resize_mode", "Crop and Resize")),
        region_mask=_unit_image(f"{where}.effective_region_mask", u.get("effective_region_mask"), limits.max_input_pixels),
        layer_scales=u.get("advanced_weighting"),
        save_map=_bool(f"{where}.save_detected_map", u.get("save_detected_map"), True),
    )


def _prefixed(where: str, fn):
    try:
        return fn()
    except FieldError as exc:
        raise FieldError(f"{where}.{exc.field}", str(exc).removeprefix(f"{exc.field}: ")) from None


def parse_units(body: dict, catalog, limits: Limits, warnings: list) -> list[UnitRequest]:
    scripts = body.get("alwayson_scripts") or {}
    if not isinstance(scripts, dict):
        raise FieldError("alwayson_scripts", "must be an object of {script title: {args: [...]}}")
    entry = next((v for k, v in scripts.items() if str(k).lower() == "controlnet"), None)
    if entry is None:
        return []
    args = entry.get("args", []) if isinstance(entry, dict) else entry
    if not isinstance(args, list):
        raise FieldError(UNITS_FIELD, "must be a list of units")
    if len(args) > limits.units:
        raise FieldError(UNITS_FIELD, f"{len(args)} units given, this server has {limits.units} (--units); "
                                      "A1111 would drop the rest silently, this server refuses")
    units = []
    for i, raw in enumerate(args):
        unit = parse_unit(i, raw, catalog, limits, warnings)
        if unit is not None:
            if unit.start > unit.end:
                raise FieldError(f"{unit.field}.guidance_start", f"{unit.start} is after guidance_end {unit.end}")
            units.append(unit)
    return units


# ---------------------------------------------------------------------------------------- requests


def parse_generation(kind: str, body, catalog, limits: Limits) -> GenerationRequest:
    """A txt2img / img2img body -> a checked GenerationRequest (FieldError names the bad field)."""
    if not isinstance(body, dict):
        raise FieldError("body", f"must be a JSON object, got {type(body).__name__}")
    warnings: list[str] = []
    seed = _int("seed", body, -1, lo=-1, hi=2**32 - 1 - limits.max_batch)
    batch_size = _int("batch_size", body, 1, lo=1, hi=limits.max_batch)
    n_iter = _int("n_iter", body, 1, lo=1, hi=limits.max_batch)
    if batch_size * n_iter > limits.max_batch:
        raise FieldError("batch_size", f"batch_size × n_iter = {batch_size * n_iter} images, more than the "
                                       f"{limits.max_batch} allowed per request (--max-batch)")
    sampler, label = sampler_name(body)
    req = GenerationRequest(
        kind=kind, prompt=_text("prompt", body), negative_prompt=_text("negative_prompt", body),
        seed=None if seed == -1 else seed, steps=_int("steps", body, 20, lo=1, hi=limits.max_steps),
        cfg=_number("cfg_scale", body, 7.0, lo=0.0, hi=100.0), sampler=sampler, sampler_label=label,
        eta=_number("eta", body, 0.0, lo=0.0, hi=1.0),
        width=_int("width", body, 512, lo=8, hi=limits.max_side), height=_int("height", body, 512, lo=8, hi=limits.max_side),
        batch_size=batch_size, n_iter=n_iter, units=parse_units(body, catalog, limits, warnings), warnings=warnings,
    )
    if kind == "img2img":
        _img2img(req, body, limits)
    elif any(u.image is None for u in req.units):
        u = next(u for u in req.units if u.image is None)
        raise FieldError(f"{u.field}.image", "an enabled unit needs its condition image (base64)")
    req.echo = _echo(body)
    return req


def _img2img(req: GenerationRequest, body: dict, limits: Limits) -> None:
    images = body.get("init_images")
    if not isinstance(images, list) or not images:
        raise FieldError("init_images", "img2img needs init_images: a list with one base64 image")
    if len(images) > 1:
        raise FieldError("init_images", f"{len(images)} images given; one init image per request is supported")
    if body.get("mask") not in (None, ""):
        raise FieldError("mask", "inpainting (an img2img mask) is not supported by this server; leave mask empty")
    req.init_image = decode_image("init_images[0]", images[0], limits.max_input_pixels)
    req.strength = _number("denoising_strength", body, 0.75, lo=0.0, hi=1.0)
    if req.strength == 0.0:
        raise FieldError("denoising_strength", "0 leaves nothing to sample; give a value in (0, 1]")
    for u in req.units:
        if u.image is None:
            u.image = req.init_image  # A1111: a unit without an image uses the init image


def _echo(body: dict) -> dict:
    """The request as A1111 echoes it in `parameters`, with image data shortened (it can be megabytes)."""
    def short(v):
        if isinstance(v, str) and len(v) > 256:
            return f"<{len(v)} characters of base64>"
        if isinstance(v, dict):
            return {k: short(x) for k, x in v.items()}
        if isinstance(v, list):
            return [short(x) for x in v]
        return v
    return short(body)


def parse_detect(body, limits: Limits) -> DetectRequest:
    """POST /controlnet/detect: accepts controlnet_input_images and webuiapi's controlnet_images."""
    if not isinstance(body, dict):
        raise FieldError("body", f"must be a JSON object, got {type(body).__name__}")
    module = modules.resolve("controlnet_module", body.get("controlnet_module", "none"))
    if module is None:
        raise FieldError("controlnet_module", "give a module to run (GET /controlnet/module_list); 'none' detects nothing")
    key = "controlnet_input_images" if body.get("controlnet_input_images") else "controlnet_images"
    images = body.get(key)
    if not isinstance(images, list) or not images:
        raise FieldError("controlnet_input_images", "No image selected: give a list of base64 images")
    if len(images) > limits.max_batch:
        raise FieldError(key, f"{len(images)} images, more than the {limits.max_batch} allowed per request (--max-batch)")
    decoded = [decode_image(f"{key}[{i}]", v, limits.max_input_pixels) for i, v in enumerate(images)]
    warnings: list[str] = []
    resolution, params = modules.bind_sliders("detect", module, body.get("controlnet_processor_res"),
                                              body.get("controlnet_threshold_a"), body.get("controlnet_threshold_b"), warnings)
    return DetectRequest(module, decoded, resolution, params, warnings)


__all__: list[Any] = ["DetectRequest", "GenerationRequest", "UnitRequest", "parse_detect", "parse_generation"]
