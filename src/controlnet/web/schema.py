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

from controlnet import checks, recommended
from controlnet.errors import InputError
from controlnet.images import resize_mode as canonical_resize
from controlnet.parameters import A1111_SAMPLERS as SAMPLERS
from controlnet.parameters import MODE_LABELS
from controlnet.web import modules, unsupported
from controlnet.web.guard import Limits
from controlnet.web.inputs import FieldError, decode_image

UNITS_FIELD = "alwayson_scripts.controlnet.args"
INPAINT_ONLY_BLUR = 2.0  # sd-webui-controlnet pastes inpaint_only back through its mask dilated and blurred by 7 px
UNIT_ALIASES = {"input_image": "image", "guidance": "guidance_end", "lowvram": "low_vram", "mask_image": "mask"}
CONTROL_MODES = {"balanced": "balanced", "my prompt is more important": "prompt", "controlnet is more important": "control",
                 "0": "balanced", "1": "prompt", "2": "control", "prompt": "prompt", "control": "control", "cfg_rw": "cfg_rw"}
# sd-webui-controlnet's union_control_type names, in the union's type order ("Unknown": no type given)
UNION_TYPES = ("OpenPose", "Depth", "Soft Edge", "Hard Edge", "Normal Map", "Segmentation", "Tile", "Inpaint")
RESIZE_INTS = {0: "just_resize", 1: "crop_and_resize", 2: "resize_and_fill", 3: "just_resize"}
SAMPLER_LABELS = {ours: label for label, ours in SAMPLERS.items()}
# what a request (and the page) gets for a value it leaves out and its ControlNets recommend nothing:
# A1111's defaults, except DDIM (as before); with a recommendation, recommended.choose's rule applies
DEFAULTS = {"cfg_scale": 7.0, "sampler_name": "DDIM", "steps": 20, "weight": 1.0, "control_mode": "Balanced"}
# A1111 field -> the key of recommended.json
RECOMMENDED_KEYS = {"cfg_scale": "guidance_scale", "sampler_name": "scheduler", "steps": "steps", "weight": "weight",
                    "control_mode": "mode"}


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
    mask: np.ndarray | None = None  # the inpaint modules' mask (bool, True = repaint), the image's size
    schedule: tuple | None = None  # weight_schedule keyframes (controlnet.pipeline.schedule)
    schedule_interpolation: str = "hold"
    control_type: str | None = None  # union_control_type: a union ControlNet's type of the image (None: Unknown)


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
    init_resize: str = "just_resize"  # img2img resize_mode: how the init image (and mask) are fitted (A1111's default 0)
    mask: np.ndarray | None = None  # inpainting: bool, True = repaint, init_image's size
    inpaint_mode: str = "inpaint_only"  # A1111 keeps the predicted x0 outside the mask (controlnet.pipeline.inpaint)
    mask_blur: float | None = None  # the paste-back's sigma in pixels (None: no paste-back)
    inpaint_fill: bool = False  # A1111's inpainting_fill 0: the masked area pre-filled from its surroundings
    echo: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    recommended: dict = field(default_factory=dict)  # field -> value taken from the ControlNets' recommended.json
    approx: dict = field(default_factory=dict)  # approximate modes asked for (controlnet.pipeline.reuse); {}: exact
    control_image: np.ndarray | None = None  # a FLUX.1 Control base's hint (on its input channels)

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


def _side(name: str, body: dict, limits: Limits) -> int:
    """width / height: a multiple of 8 (the VAE's scale) up to --max-side; the error names both."""
    value = _int(name, body, 512, lo=8, hi=limits.max_side)
    if value % 8:
        low, high = value - value % 8, value - value % 8 + 8
        hint = f"{low} or {high}" if high <= limits.max_side else str(low)
        raise FieldError(name, f"must be a multiple of 8 in [8, {limits.max_side}] (--max-side), got {value}; use {hint}")
    return value


def _text(name: str, body: dict, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise FieldError(name, f"must be text, got {type(value).__name__}")
    return value


def _prompt(name: str, body: dict) -> str:
    """A prompt the encoder can take (text, weights in range, brackets not nested too deep)."""
    from controlnet.pipeline.prompts import check_prompt

    value = _text(name, body)
    try:
        return check_prompt(value, name)
    except InputError as exc:
        raise FieldError(name, str(exc).removeprefix(f"{name} ")) from None


def _layer_scales(name: str, value) -> list[float] | None:
    """advanced_weighting: one scale per connection, each bounded like a control weight."""
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise FieldError(name, f"must be a list of numbers, one per connection, got {type(value).__name__}")
    scales = []
    for i, v in enumerate(value):
        try:
            scales.append(checks.weight("scale", v, lo=-checks.MAX_WEIGHT))
        except InputError as exc:
            raise FieldError(f"{name}[{i}]", str(exc).removeprefix("scale ")) from None
    return scales


def _bool(name: str, value, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool) or value in (0, 1):
        return bool(value)
    raise FieldError(name, f"must be true or false, got {value!r}")


def sampler_name(body: dict, default: str = DEFAULTS["sampler_name"]) -> tuple[str, str]:
    """(our scheduler name, the label A1111 reports) from sampler_name / sampler_index (+ scheduler 'Karras')."""
    from controlnet.pipeline.schedulers import ALIASES, SCHEDULERS

    label = body.get("sampler_name") or body.get("sampler_index") or default
    if not isinstance(label, str):
        raise FieldError("sampler_name", f"must be a sampler name (text), got {label!r}")
    ours = {k.lower(): v for k, v in SAMPLERS.items()}.get(label.strip().lower())
    ours = ours or ALIASES.get(label.strip().lower(), label.strip().lower())
    if ours not in SCHEDULERS:
        raise FieldError("sampler_name", f"unknown sampler {label!r}; GET /sdapi/v1/samplers lists them: {', '.join(SAMPLERS)}")
    return schedule_type(ours, label, body.get("scheduler")), label


def schedule_type(ours: str, label: str, value) -> str:
    """A1111's `scheduler` (Schedule type) applied to the sampler: Automatic is each sampler's own;
    Karras runs with DPM++ 2M; anything else is refused, never dropped."""
    if value is not None and not isinstance(value, str):
        raise FieldError("scheduler", f"must be a schedule type name (text), got {value!r}")
    key = (value or "automatic").strip().lower()
    if key == "automatic" or (key == "karras" and ours == "dpmpp_2m_karras"):
        return ours
    if key == "karras" and ours == "dpmpp_2m":
        return "dpmpp_2m_karras"
    if key == "karras":
        raise FieldError("scheduler", f"Karras runs with sampler DPM++ 2M only here, not with {label!r}; "
                                      "use scheduler 'Automatic' or sampler_name 'DPM++ 2M'")
    raise FieldError("scheduler", f"schedule type {value!r} is not offered here; use 'Automatic' (any sampler) "
                                  "or 'Karras' (DPM++ 2M); GET /sdapi/v1/schedulers lists them")


def _recommended(name: str, given, nets: list, report: dict):
    """`given`, else what the ControlNets at `nets` recommend for A1111 field `name`
    (recommended.choose's rule, shared with `controlnet generate`), else DEFAULTS; a recommended
    value is also put in `report` (info.recommended) under the field's full name."""
    short = name.rsplit(".", 1)[-1]
    value, taken = recommended.choose(RECOMMENDED_KEYS[short], given, nets, None)
    if not taken:
        return given
    value = {"sampler_name": SAMPLER_LABELS, "control_mode": MODE_LABELS}.get(short, {}).get(value, value)
    report[name] = value
    return value


def recommended_settings(nets: list) -> dict:
    """A1111 field -> the value the ControlNets at `nets` recommend (what an omitted field gets)."""
    report: dict = {}
    for name in RECOMMENDED_KEYS:
        _recommended(name, None, nets, report)
    return report


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


def _mask(name: str, value, max_pixels: int, warnings: list) -> np.ndarray | None:
    """A base64 mask -> bool (True = repaint) by the pipeline's one mask rule, after rounding its grey or
    coloured pixels (anti-aliased strokes, JPEG) to black or white at half intensity, as A1111 rounds its
    masks (`info.warnings` says how many); "" or null = none."""
    from controlnet.pipeline.inpaint import binary_mask

    image = _optional_image(name, value, max_pixels)
    if image is None:
        return None
    image, rounded = _rounded(image)
    if rounded:
        warnings.append(f"{name}: {rounded:,} grey or coloured pixels were rounded to black (keep) or white (repaint)")
    try:
        return binary_mask(image, "the mask")
    except InputError as exc:
        raise FieldError(name, str(exc)) from None


def _rounded(image: np.ndarray) -> tuple[np.ndarray, int]:
    """(the image with its colour channels each pixel's mean rounded to 0 or full scale, how many pixels
    changed); an alpha channel is left to the mask rule."""
    channels = 1 if image.ndim == 2 else (1 if image.shape[2] <= 2 else 3)
    colour = image.reshape(*image.shape[:2], -1)[:, :, :channels].astype(np.float64)
    top = 1.0 if np.issubdtype(image.dtype, np.floating) else float(np.iinfo(image.dtype).max)
    white = colour.mean(axis=2) > top / 2
    changed = int(np.count_nonzero((colour != np.where(white, top, 0.0)[:, :, None]).any(axis=2)))
    if not changed:
        return image, 0
    out = image.reshape(*image.shape[:2], -1).copy()
    out[:, :, :channels] = np.where(white, top, 0)[:, :, None].astype(image.dtype)
    return out.reshape(image.shape), changed


def _unit_image(name: str, value, max_pixels: int, warnings: list) -> tuple[np.ndarray | None, np.ndarray | None, str]:
    """A1111's image forms: a base64 string, {"image", "mask"}, [image, mask]; "" or null = none.
    -> (image, mask, the mask's field name)."""
    mask, mask_name = None, f"{name}.mask"
    if isinstance(value, dict):
        value, mask = value.get("image"), value.get("mask")
    elif isinstance(value, list):
        if len(value) not in (1, 2):
            raise FieldError(name, "give one image, or [image, mask] (a list of several images is not supported)")
        value, mask, mask_name = value[0], value[1] if len(value) == 2 else None, f"{name}[1]"
        name = f"{name}[0]"
    return _optional_image(name, value, max_pixels), _mask(mask_name, mask, max_pixels, warnings), mask_name


def _unit_mask(where: str, u: dict, module: str | None, max_pixels: int,
               warnings: list) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(image, inpaint mask) of a unit: the mask from its image ({"image", "mask"} or [image, mask]) or its
    `mask` field; an all-black mask (an empty sketch layer, which A1111 clients send) is no mask."""
    image, mask, mask_name = _unit_image(f"{where}.image", u.get("image"), max_pixels, warnings)
    own = _mask(f"{where}.mask", u.get("mask"), max_pixels, warnings)
    if own is not None:
        if mask is not None:
            raise FieldError(f"{where}.mask", f"the unit's mask is given twice (also in {mask_name}); give it once")
        mask, mask_name = own, f"{where}.mask"
    if mask is None or not mask.any():
        return image, None
    if not modules.is_inpaint(module):
        raise FieldError(mask_name, "a unit mask is the inpaint modules' mask (module inpaint_only or "
                                    "inpaint_global_harmonious, with an inpaint ControlNet); to limit a unit to a region "
                                    "send effective_region_mask")
    if image is not None and mask.shape != image.shape[:2]:
        raise FieldError(mask_name, f"the mask is {_size(mask)} but the unit's image is {_size(image)}; give a mask of "
                                    "the image's size")
    return image, mask


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}×{array.shape[0]}"


def _schedule(where: str, u: dict, warnings: list) -> tuple[tuple | None, str]:
    """This server's extra unit fields (sd-webui-controlnet has none for it): `weight_schedule`, keyframes
    as "0:1,0.5:0.3" or [[0, 1], [0.5, 0.3]], and `weight_schedule_interpolation` (hold | linear)."""
    from controlnet.pipeline.schedule import check_interpolation, check_schedule

    schedule, interpolation = u.get("weight_schedule"), u.get("weight_schedule_interpolation")
    if schedule is not None:
        schedule = _checked(f"{where}.weight_schedule", check_schedule, schedule)
    if interpolation is None:
        return schedule, "hold"
    interpolation = _checked(f"{where}.weight_schedule_interpolation", check_interpolation, interpolation)
    if schedule is None:
        warnings.append(f"{where}.weight_schedule_interpolation has no effect without weight_schedule")
    return schedule, interpolation


def _checked(name: str, check, value):
    """A pipeline check (label first in its message) as a FieldError naming the field."""
    try:
        return check(value, name)
    except InputError as exc:
        raise FieldError(name, str(exc).removeprefix(name).lstrip(": ")) from None


def _approx(name: str, value) -> dict:
    """This server's extension field: the approximate modes (an object of `Approximation`'s fields;
    absent or null: exact), checked by the pipeline's rule; only the fields that ask for something are kept."""
    from controlnet.pipeline.reuse import approximation

    if value is not None and not isinstance(value, dict):
        raise FieldError(name, f"must be an object such as {{\"deepcache\": 2}}, got {type(value).__name__}")
    try:
        return approximation(value or None).asked()
    except InputError as exc:
        raise FieldError(name, str(exc).removeprefix("approx: ")) from None


def union_control_type(where: str, value, model: str, types: int | None) -> str | None:
    """A unit's union_control_type against its ControlNet (`types`: a union's type count, else None):
    a union one needs one of A1111's names (or any name `--control-type` takes); any other takes
    none. "Unknown", "" or null = none, what A1111 clients send for every unit."""
    from controlnet.nn.union import control_type_index

    name = f"{where}.union_control_type"
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "unknown")):
        value = None
    if types is None:
        if value is not None:
            raise FieldError(name, f"{value!r}: a control type is for union ControlNets (xinsir union / ProMax); "
                                   f"{model} is not one: leave union_control_type out (or 'Unknown')")
        return None
    valid = f"valid for {model} ({types} types): {', '.join(UNION_TYPES[:types])}"
    if value is None:
        raise FieldError(name, f"{model} is a union ControlNet: give the type of the unit's image; {valid}")
    if not isinstance(value, str):
        raise FieldError(name, f"must be a control type name (text), got {value!r:.40}; {valid}")
    try:
        control_type_index(value, types)
    except InputError:
        raise FieldError(name, f"unknown control type {value!r}; {valid}") from None
    return value.strip()


def _optional_image(name: str, value, max_pixels: int) -> np.ndarray | None:
    """A base64 image; "" or null = none."""
    if value is None or value == "":
        return None
    return decode_image(name, value, max_pixels)


def parse_unit(index: int, raw, catalog, limits: Limits, warnings: list, report: dict | None = None) -> UnitRequest | None:
    """One sd-webui-controlnet unit; None when it is not enabled."""
    where = f"{UNITS_FIELD}[{index}]"
    if not isinstance(raw, dict):
        raise FieldError(where, f"must be a unit object, got {type(raw).__name__}")
    u = {UNIT_ALIASES.get(k.lower(), k.lower()): v for k, v in raw.items()}
    if not _bool(f"{where}.enabled", u.get("enabled"), False):
        return None
    unsupported.check_unit(where, u)
    model = catalog.find_controlnet(u.get("model"))
    if model is None:
        raise FieldError(f"{where}.model", f"unknown ControlNet {u.get('model')!r}; GET /controlnet/model_list lists them: "
                                           f"{', '.join(catalog.controlnet_titles()) or '(none)'}")
    module = modules.resolve(f"{where}.module", u.get("module"), catalog.annotator_dir)
    image, mask = _unit_mask(where, u, module, limits.max_input_pixels, warnings)
    schedule, interpolation = _schedule(where, u, warnings)
    resolution, params = (512, {}) if module is None else modules.bind_sliders(
        where, module, u.get("processor_res"), u.get("threshold_a"), u.get("threshold_b"), warnings)
    net, report = [catalog.controlnets[model]], {} if report is None else report
    u["weight"] = _recommended(f"{where}.weight", u.get("weight"), net, report)
    u["control_mode"] = _recommended(f"{where}.control_mode", u.get("control_mode"), net, report)
    mode = control_mode(f"{where}.control_mode", DEFAULTS["control_mode"] if u["control_mode"] is None else u["control_mode"])
    if u.get("guessmode"):
        mode = "control"
    start = _prefixed(where, lambda: _number("guidance_start", u, 0.0, 0.0, 1.0))
    end = _prefixed(where, lambda: _number("guidance_end", u, 1.0, 0.0, 1.0))
    return UnitRequest(
        index=index, field=where, model=model, image=image, mask=mask, schedule=schedule,
        schedule_interpolation=interpolation, module=module, resolution=resolution, params=params,
        pixel_perfect=_bool(f"{where}.pixel_perfect", u.get("pixel_perfect"), False),
        weight=_prefixed(where, lambda: _number("weight", u, DEFAULTS["weight"], 0.0, 2.0)),
        start=start, end=end, mode=mode,
        resize=resize(f"{where}.resize_mode", u.get("resize_mode", "Crop and Resize")),
        region_mask=_optional_image(f"{where}.effective_region_mask", u.get("effective_region_mask"), limits.max_input_pixels),
        layer_scales=_layer_scales(f"{where}.advanced_weighting", u.get("advanced_weighting")),
        save_map=_bool(f"{where}.save_detected_map", u.get("save_detected_map"), True),
        control_type=union_control_type(where, u.get("union_control_type"), model, catalog.family(model)[1]),
    )


def _prefixed(where: str, fn):
    try:
        return fn()
    except FieldError as exc:
        raise FieldError(f"{where}.{exc.field}", str(exc).removeprefix(f"{exc.field}: ")) from None


def parse_units(body: dict, catalog, limits: Limits, warnings: list, report: dict | None = None) -> list[UnitRequest]:
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
        unit = parse_unit(i, raw, catalog, limits, warnings, report)
        if unit is not None:
            if unit.start > unit.end:
                raise FieldError(f"{unit.field}.guidance_start", f"{unit.start} is after guidance_end {unit.end}")
            units.append(unit)
    _xs_alone(units, catalog)
    return units


def _xs_alone(units: list[UnitRequest], catalog) -> None:
    """A ControlNet-XS unit must be the only enabled one (its U-Net is coupled with it)."""
    xs = next((u for u in units if catalog.family(u.model)[0] == "controlnet-xs"), None)
    if xs is not None and len(units) > 1:
        raise FieldError(f"{xs.field}.model", f"{xs.model} is a ControlNet-XS, which must be the only enabled unit (its "
                                              "U-Net is coupled with it): disable the other units or pick another model")


# ---------------------------------------------------------------------------------------- requests


def parse_generation(kind: str, body, catalog, limits: Limits) -> GenerationRequest:
    """A txt2img / img2img body -> a checked GenerationRequest (FieldError names the bad field)."""
    if not isinstance(body, dict):
        raise FieldError("body", f"must be a JSON object, got {type(body).__name__}")
    warnings: list[str] = []
    unsupported.check_request(body, catalog.model_name, warnings)
    seed = _int("seed", body, -1, lo=-1, hi=2**32 - 1)  # image k: seed + k, wrapping to 0 (pipeline.sampling.seed_at)
    batch_size = _int("batch_size", body, 1, lo=1, hi=limits.max_batch)
    n_iter = _int("n_iter", body, 1, lo=1, hi=limits.max_batch)
    if batch_size * n_iter > limits.max_batch:
        raise FieldError("batch_size", f"batch_size × n_iter = {batch_size * n_iter} images, more than the "
                                       f"{limits.max_batch} allowed per request (--max-batch)")
    report: dict = {}
    units = parse_units(body, catalog, limits, warnings, report)
    nets = [catalog.controlnets[u.model] for u in units]
    shared = {name: _recommended(name, body.get(name), nets, report) for name in ("cfg_scale", "steps")}
    if not (body.get("sampler_name") or body.get("sampler_index")):
        shared["sampler_name"] = _recommended("sampler_name", None, nets, report)
    sampler, label = sampler_name({**body, **{k: v for k, v in shared.items() if v is not None}})
    req = GenerationRequest(
        kind=kind, prompt=_prompt("prompt", body), negative_prompt=_prompt("negative_prompt", body),
        seed=None if seed == -1 else seed, steps=_int("steps", shared, DEFAULTS["steps"], lo=1, hi=limits.max_steps),
        cfg=_number("cfg_scale", shared, DEFAULTS["cfg_scale"], lo=0.0, hi=100.0), sampler=sampler, sampler_label=label,
        eta=_number("eta", body, 0.0, lo=0.0, hi=1.0),
        width=_side("width", body, limits), height=_side("height", body, limits),
        batch_size=batch_size, n_iter=n_iter, units=units, warnings=warnings, recommended=report,
        approx=_approx("approx", body.get("approx")),
    )
    if kind == "img2img":
        _img2img(req, body, limits)
    elif any(u.image is None for u in req.units):
        u = next(u for u in req.units if u.image is None)
        raise FieldError(f"{u.field}.image", "an enabled unit needs its condition image (base64)")
    elif body.get("mask") not in (None, ""):
        raise FieldError("mask", "inpainting needs the picture to inpaint: send it with init_images to /sdapi/v1/img2img")
    _inpaint_units(req)
    _control_image(req, body, catalog, limits)
    req.echo = _echo(body)
    if getattr(catalog, "base_kind", "unet") != "unet":  # an SD3 / Flux base (web.dit_engine)
        unsupported.check_transformer_base(req, catalog.base_kind, catalog.base_name, catalog.pipe.size_multiple)
    return req


def _control_image(req: GenerationRequest, body: dict, catalog, limits: Limits) -> None:
    """A FLUX.1 Control base's hint (`control_image`, base64; fitted as `generate --control-image` fits it,
    crop and resize): needed by such a base, refused by any other."""
    takes = getattr(catalog, "takes_control_image", False)
    req.control_image = _optional_image("control_image", body.get("control_image"), limits.max_input_pixels)
    if takes and req.control_image is None:
        raise FieldError("control_image", f"{catalog.model_name} is a FLUX.1 Control model: send its hint (an edge or "
                                          "depth map, base64) as control_image")
    if not takes and req.control_image is not None:
        raise FieldError("control_image", "control_image is for FLUX.1 Control bases (Canny/Depth dev, or a Flux base "
                                          "served with --control-lora); this base takes hints through ControlNet units")


def _img2img(req: GenerationRequest, body: dict, limits: Limits) -> None:
    images = body.get("init_images")
    if not isinstance(images, list) or not images:
        raise FieldError("init_images", "img2img needs init_images: a list with one base64 image")
    if len(images) > 1:
        raise FieldError("init_images", f"{len(images)} images given; one init image per request is supported")
    req.init_image = decode_image("init_images[0]", images[0], limits.max_input_pixels)
    req.init_resize = resize("resize_mode", body.get("resize_mode", 0))  # A1111's img2img default: Just resize
    req.strength = _number("denoising_strength", body, 0.75, lo=0.0, hi=1.0)
    if req.strength == 0.0:
        raise FieldError("denoising_strength", "0 leaves nothing to sample; give a value in (0, 1]")
    if int(req.steps * req.strength) < 1:
        raise FieldError("denoising_strength", f"{req.strength:g} of {req.steps} steps leaves no step to run; "
                                               f"raise denoising_strength to at least {1 / req.steps:.3g} or steps")
    _number("initial_noise_multiplier", body, 1.0, lo=0.0)  # checked; not applied (web.unsupported says so)
    mask = _mask("mask", body.get("mask"), limits.max_input_pixels, req.warnings)
    if mask is not None:
        _img2img_mask(req, body, mask)
    for u in req.units:
        if u.image is None:
            u.image = req.init_image  # A1111: a unit without an image uses the init image (and its mask)
            if u.mask is None and modules.is_inpaint(u.module):
                u.mask = req.mask
            elif u.mask is not None and u.mask.shape != u.image.shape[:2]:
                raise FieldError(f"{u.field}.mask", f"the mask is {_size(u.mask)} but init_images[0], the unit's "
                                                    f"image, is {_size(u.image)}; give a mask of its size")


INPAINTING_FILLS = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}


def _img2img_mask(req: GenerationRequest, body: dict, mask: np.ndarray) -> None:
    """A1111's inpainting fields: mask (white = repaint; black with inpainting_mask_invert), mask_blur (here
    the sigma of the paste onto the original), inpainting_fill 0 or 1; inpaint_full_res is not offered."""
    if _bool("inpainting_mask_invert", body.get("inpainting_mask_invert"), False):
        mask = ~mask
    if mask.shape != req.init_image.shape[:2]:
        raise FieldError("mask", f"the mask is {_size(mask)} but init_images[0] is {_size(req.init_image)}; give a mask "
                                 "of the init image's size")
    if not mask.any():
        raise FieldError("mask", "the mask is empty (all black, or all white with inpainting_mask_invert): paint the "
                                 "area to repaint in white")
    req.mask = mask
    req.mask_blur = _number("mask_blur", body, 4.0, lo=0.0, hi=256.0)
    for axis in ("mask_blur_x", "mask_blur_y"):
        if body.get(axis) not in (None, req.mask_blur):
            req.warnings.append(f"{axis} {body[axis]!r} was not used: one blur for both directions, mask_blur "
                                f"({req.mask_blur:g})")
    fill = _int("inpainting_fill", body, 0, lo=0, hi=3)
    if fill > 1:
        raise FieldError("inpainting_fill", f"{fill} ({INPAINTING_FILLS[fill]}) is not offered; use 0 (fill) or 1 "
                                            "(original); denoising_strength 1 starts the masked area from pure noise")
    req.inpaint_fill = fill == 0
    if not _bool("mask_round", body.get("mask_round"), True):
        req.warnings.append("mask_round false is not offered: the mask was rounded to black and white")
    if _bool("inpaint_full_res", body.get("inpaint_full_res"), False):
        req.warnings.append(f"inpaint_full_res (inpaint area: only masked) is not offered: the whole picture was "
                            f"inpainted at {req.width}×{req.height}, and inpaint_full_res_padding was not used")


def _inpaint_units(req: GenerationRequest) -> None:
    """The inpaint modules need a mask. inpaint_only (sd-webui-controlnet) also keeps the unit's picture
    outside its mask: without an img2img mask, its image and mask become the request's inpainting
    (txt2img: sampled from pure noise, pasted back as the extension does)."""
    for u in req.units:
        if modules.is_inpaint(u.module) and u.mask is None:
            raise FieldError(f"{u.field}.mask", f"module {u.module} needs a mask, white where to repaint (none was "
                                                "given, or it is all black): send the unit's image as {\"image\", "
                                                "\"mask\"} or [image, mask], or its mask field (img2img: the mask)")
    keep = [u for u in req.units if u.module == "inpaint_only"]
    if not keep or req.mask is not None:
        return
    first = keep[0]
    for u in keep[1:]:
        if not (np.array_equal(u.image, first.image) and np.array_equal(u.mask, first.mask)):
            raise FieldError(f"{u.field}.mask", f"a second inpaint_only unit with another image or mask than "
                                                f"{first.field}; one inpainting per request: give them the same")
    if req.init_image is None:
        req.init_image, req.strength, req.init_resize, req.mask_blur = first.image, 1.0, first.resize, INPAINT_ONLY_BLUR
    elif first.mask.shape != req.init_image.shape[:2]:
        raise FieldError(f"{first.field}.mask", f"the mask is {_size(first.mask)} but init_images[0] is "
                                                f"{_size(req.init_image)}; give a mask of the init image's size")
    else:
        req.mask_blur = INPAINT_ONLY_BLUR
    req.mask = first.mask


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


def parse_detect(body, limits: Limits, weights=None) -> DetectRequest:
    """POST /controlnet/detect: accepts controlnet_input_images and webuiapi's controlnet_images (`weights`: the
    server's --annotator-dir)."""
    if not isinstance(body, dict):
        raise FieldError("body", f"must be a JSON object, got {type(body).__name__}")
    module = modules.resolve("controlnet_module", body.get("controlnet_module", "none"), weights)
    if module is None:
        raise FieldError("controlnet_module", "give a module to run (GET /controlnet/module_list); 'none' detects nothing")
    if modules.is_inpaint(module):
        raise FieldError("controlnet_module", f"{module} has nothing to detect: it builds its map from a unit's image and "
                                              "mask when generating; use it in a ControlNet unit")
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
