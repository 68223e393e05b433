"""The preprocessors ("modules") the server offers, in A1111's terms: each one's sliders
(processor_res, threshold_a, threshold_b) mapped onto the annotator's own parameters.

Annotators that need a local model file are left out: a request may not name server paths.
"""

from __future__ import annotations

from controlnet.errors import InputError

NONE = "none"
# A1111 / sd-webui-controlnet names -> ours (its "(from white bg & black line)" style labels are cut at " (")
A1111_NAMES = {"t2ia_color_grid": "color", "openpose": "pose", "blur": "blur_gaussian", "tile": "tile_resample"}


def offered() -> dict:
    """name -> Annotator for every annotator that runs without a local model file."""
    from controlnet.annotators import list_annotators

    return {a.name: a for a in list_annotators() if not any(p.required for p in a.params)}


def resolve(field: str, name) -> str | None:
    """A module name (ours, an alias or A1111's label) -> our annotator name; "none" -> None."""
    from controlnet.annotators import get_annotator
    from controlnet.web.inputs import FieldError

    if name is None:
        return None
    if not isinstance(name, str):
        raise FieldError(field, f"must be a module name (text), got {name!r}")
    key = name.split(" (")[0].strip().lower()
    if key in ("", NONE):
        return None
    available = offered()
    try:
        spec = get_annotator(A1111_NAMES.get(key, key))
    except InputError:
        spec = None
    if spec is None or spec.name not in available:
        raise FieldError(field, f"unknown module {name!r}; GET /controlnet/module_list lists them: none, {', '.join(available)}")
    return spec.name


def threshold_params(spec) -> list:
    """The annotator parameters that A1111's threshold_a and threshold_b set (its first two numbers)."""
    return spec.threshold_params()


def sliders(spec) -> list[dict]:
    """A1111's `module_detail[name]["sliders"]`: resolution first when the detector uses it."""
    out = []
    if spec.uses_resolution:
        out.append({"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8})
    for p in threshold_params(spec):
        hi = p.maximum if p.maximum is not None else max(1.0, float(p.default) * 4)
        step = 1 if p.kind is int else 0.01
        out.append({"name": p.name, "value": p.default, "min": p.minimum if p.minimum is not None else 0, "max": hi, "step": step})
    return out


def module_list() -> dict:
    """The body of GET /controlnet/module_list."""
    mods = offered()
    detail = {NONE: {"model_free": False, "sliders": []}}
    detail.update({name: {"model_free": False, "sliders": sliders(spec)} for name, spec in mods.items()})
    return {"module_list": [NONE, *mods], "module_detail": detail}


def bind_sliders(field: str, module: str, processor_res, threshold_a, threshold_b, warnings: list) -> tuple[int, dict]:
    """(detect resolution, annotator params) from A1111's sliders. -1 means the default; like A1111,
    a value outside the slider's range falls back to the default (noted in `warnings`) because
    clients send their own defaults (webuiapi: 64, 64) for every module."""
    from controlnet import annotators

    spec = annotators.get_annotator(module)
    resolution = 512
    if processor_res is not None and processor_res != -1:
        if isinstance(processor_res, bool) or not isinstance(processor_res, (int, float)):
            from controlnet.web.inputs import FieldError
            raise FieldError(f"{field}.processor_res", f"must be a number of pixels, got {processor_res!r}")
        if 64 <= processor_res <= 8192 and float(processor_res).is_integer():
            resolution = int(processor_res)
        else:
            warnings.append(f"{field}.processor_res {processor_res} is outside 64..8192; the default 512 was used")
    params = {}
    for slot, value, p in zip(("threshold_a", "threshold_b"), (threshold_a, threshold_b), threshold_params(spec)):
        if value is None or value == -1:
            continue
        try:
            params[p.name] = p.convert(value, module)
        except InputError:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                from controlnet.web.inputs import FieldError
                raise FieldError(f"{field}.{slot}", f"must be a number, got {value!r}") from None
            warnings.append(f"{field}.{slot} ({module} {p.name}) {value} is out of range; the default {p.default} was used")
    return resolution, params
