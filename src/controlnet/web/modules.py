"""The preprocessors ("modules") the server offers, in A1111's terms: each one's sliders
(processor_res, threshold_a, threshold_b) mapped onto the annotator's own parameters.

Only what can run here is offered: annotators whose optional package is missing are left out
(checked once), and so are those that need weights unless the server was given them in its
`--annotator-dir` (a request may not name server paths). The inpaint modules are not annotators:
they take the unit's mask (`controlnet.web.schema`).
"""

from __future__ import annotations

import functools
from pathlib import Path

from controlnet.errors import InputError

NONE = "none"
# A1111 / sd-webui-controlnet names -> ours (its "(from white bg & black line)" style labels are cut at " ("); the
# depth names map to our annotator of the same maps (MiDaS depth), which needs local weights
A1111_NAMES = {"t2ia_color_grid": "color", "blur": "blur_gaussian", "tile": "tile_resample",
               "depth_anything": "depth",
               }  # depth_midas, depth_zoe, depth_leres(++), seg_ofade20k, seg_ofcoco, seg_ufade20k are annotators of their own
# sd-webui-controlnet's inpaint modules -> ours; `inpaint` is its old name of inpaint_global_harmonious
INPAINT_MODULES = {"inpaint_only": "inpaint_only", "inpaint_global_harmonious": "inpaint_global_harmonious",
                   "inpaint": "inpaint_global_harmonious"}
DEPTH = "a transformers depth-estimation folder, e.g. a copy of Intel/dpt-hybrid-midas"
# learned annotator -> (its weights' name in --annotator-dir, what to put there)
WEIGHTS = {"depth": ("depth", DEPTH),
           "seg_ade20k": ("seg_ade20k", "a transformers ADE20K segmentation folder, e.g. a copy of "
                                        "openmmlab/upernet-convnext-small"),
           "lineart_realistic": ("sk_model.pth", "sk_model.pth from lllyasviel/Annotators"),
           "lineart_coarse": ("sk_model2.pth", "sk_model2.pth from lllyasviel/Annotators"),
           "softedge_hed": ("ControlNetHED.pth", "ControlNetHED.pth from lllyasviel/Annotators"),
           "scribble_hed": ("ControlNetHED.pth", "ControlNetHED.pth from lllyasviel/Annotators"),
           **{name: ("table5_pidinet.pth", "table5_pidinet.pth from lllyasviel/Annotators")
              for name in ("softedge_pidinet", "softedge_pidisafe", "scribble_pidinet")},
           "mlsd": ("mlsd_large_512_fp32.pth", "mlsd_large_512_fp32.pth from lllyasviel/Annotators")}
NOT_OFFERED = {"inpaint_only+lama": "needs the LaMa weights (ControlNetLama.pth), which this package does not include; "
                                    "use inpaint_only"}


def is_inpaint(module: str | None) -> bool:
    return module in INPAINT_MODULES.values()


def weights_path(module: str | None, weights: Path | None) -> Path | None:
    """The weights of a learned annotator in the server's --annotator-dir (`weights`), if they are there: the
    files the registry names (`Annotator.weights`, else WEIGHTS), flat or in sd-webui-controlnet's layout."""
    from controlnet.annotators import get_annotator
    from controlnet.annotators.local_models import find_weight

    if weights is None or module is None or is_inpaint(module):
        return None
    paths = [find_weight(name, weights) for name in _weight_files(get_annotator(module))]
    return paths[0] if paths and all(paths) else None


def _weight_files(spec) -> tuple[str, ...]:
    """Every file (or transformers folder) a learned annotator reads; the first fills its `model`."""
    return spec.weights or ((WEIGHTS[spec.name][0],) if spec.name in WEIGHTS else ())


@functools.cache
def offered(weights: Path | None = None) -> dict:
    """name -> Annotator for every annotator that runs here: its optional package installed, and no weights
    needed or its weights in the --annotator-dir `weights`."""
    from controlnet.annotators import list_annotators

    return {a.name: a for a in list_annotators() if a.unavailable() is None
            and (not any(p.required for p in a.params) or weights_path(a.name, weights) is not None)}


def resolve(field: str, name, weights: Path | None = None) -> str | None:
    """A module name (ours, an alias or A1111's label) -> our annotator or inpaint module name; "none" -> None.
    `weights`: the server's --annotator-dir."""
    from controlnet.annotators import get_annotator
    from controlnet.web.inputs import FieldError

    if name is None:
        return None
    if not isinstance(name, str):
        raise FieldError(field, f"must be a module name (text), got {name!r}")
    key = name.split(" (")[0].strip().lower()
    if key in ("", NONE):
        return None
    if key in INPAINT_MODULES:
        return INPAINT_MODULES[key]
    if key in NOT_OFFERED:
        raise FieldError(field, f"module {name!r} {NOT_OFFERED[key]}")
    available = offered(weights)
    try:
        spec = get_annotator(A1111_NAMES.get(key, key))
    except InputError:
        spec = None
    if spec is None:
        raise FieldError(field, f"unknown module {name!r}; GET /controlnet/module_list lists them: "
                                f"{', '.join(module_list(weights)['module_list'])}")
    if spec.name not in available:
        raise FieldError(field, f"module {name!r} ({spec.name}) {_why_not_offered(spec, weights)}; "
                                "GET /controlnet/module_list lists what runs here")
    return spec.name


def _why_not_offered(spec, weights: Path | None) -> str:
    reason = spec.unavailable()
    if reason:
        return f"cannot run on this server: {reason}"
    if not spec.weights and spec.name not in WEIGHTS:
        return f"needs {spec.needs}, which this server cannot be given"
    from controlnet.annotators.local_models import PUBLISHED

    files = _weight_files(spec)
    entry = " and ".join(files)
    sub, source = PUBLISHED.get(files[0], ("", "lllyasviel/Annotators"))
    what = WEIGHTS[spec.name][1] if spec.name in WEIGHTS else f"{entry} from {source}"
    where = "this server's --annotator-dir" if weights else "a folder DIR and start the server with --annotator-dir DIR"
    layout = f" (or in its {sub}/ subfolder, sd-webui-controlnet's layout)" if sub else ""
    return f"needs weights: put {what} as {entry} in {where}{layout}"


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


def module_list(weights: Path | None = None) -> dict:
    """The body of GET /controlnet/module_list (`weights`: the server's --annotator-dir)."""
    mods = offered(weights)
    inpaint = sorted(set(INPAINT_MODULES.values()))
    detail = {name: {"model_free": False, "sliders": []} for name in (NONE, *inpaint)}
    detail.update({name: {"model_free": False, "sliders": sliders(spec)} for name, spec in mods.items()})
    return {"module_list": [NONE, *inpaint, *mods], "module_detail": detail}


# sd-webui-controlnet's Control Types: name -> (module name prefixes, model name keywords, default module);
# a type is listed when something offered here belongs to it
CONTROL_TYPES = {
    "Canny": (("canny", "invert"), ("canny", "edge"), "canny"),
    "Depth": (("depth",), ("depth",), "depth_midas"),
    "NormalMap": (("normal",), ("normal",), "normal_bae"),
    "OpenPose": (("openpose", "pose", "dw_openpose"), ("openpose", "pose"), "openpose_full"),
    "MLSD": (("mlsd", "invert"), ("mlsd",), "mlsd"),
    "Lineart": (("lineart", "invert"), ("lineart",), "lineart_standard"),
    "SoftEdge": (("softedge",), ("softedge", "hed"), "softedge"),
    "Scribble/Sketch": (("scribble", "binary", "threshold", "invert"), ("scribble", "sketch"), "scribble"),
    "Segmentation": (("seg",), ("seg",), "seg_ofade20k"),
    "Shuffle": (("shuffle",), ("shuffle",), "shuffle"),
    "Tile/Blur": (("tile", "blur"), ("tile", "blur"), "tile_resample"),
    "Inpaint": (("inpaint",), ("inpaint",), "inpaint_only"),
    "Recolor": (("recolor",), ("recolor",), "recolor_luminance"),
    "T2I-Adapter": (("t2ia", "color"), ("t2ia", "t2i"), "color"),
}


# the union ControlNets' type (its union_control_type, A1111's name) that each Control Type selects
UNION_OF_CONTROL_TYPE = {"Canny": "Hard Edge", "MLSD": "Hard Edge", "Lineart": "Hard Edge", "Depth": "Depth",
                         "NormalMap": "Normal Map", "OpenPose": "OpenPose", "SoftEdge": "Soft Edge",
                         "Scribble/Sketch": "Soft Edge", "Segmentation": "Segmentation", "Tile/Blur": "Tile",
                         "Inpaint": "Inpaint"}


def control_types(model_titles: list[str], weights: Path | None = None, union_titles=()) -> dict:
    """The body of GET /controlnet/control_types, in sd-webui-controlnet's shape: per type its
    preprocessors ("none" first, those module_list offers), models ("None" first; the union
    ControlNets in every type they have), default preprocessor and model."""
    names = module_list(weights)["module_list"]
    out = {"All": {"module_list": names, "model_list": ["None", *model_titles], "default_option": NONE, "default_model": "None"}}
    for kind, (prefixes, keywords, default) in CONTROL_TYPES.items():
        mods = [n for n in names[1:] if n.startswith(prefixes)]
        models = [t for t in model_titles if any(k in t.split(" [")[0].lower() for k in keywords)
                  or (t in union_titles and kind in UNION_OF_CONTROL_TYPE)]
        if not mods and not models:
            continue
        out[kind] = {"module_list": [NONE, *mods], "model_list": ["None", *models],
                     "default_option": default if default in mods else (mods or [NONE])[0],
                     "default_model": (models or ["None"])[0]}
    return {"control_types": out}


def bind_sliders(field: str, module: str, processor_res, threshold_a, threshold_b, warnings: list) -> tuple[int, dict]:
    """(detect resolution, annotator params) from A1111's sliders. -1 means the default; like A1111,
    a value outside the slider's range falls back to the default (noted in `warnings`) because
    clients send their own defaults (webuiapi: 64, 64) for every module."""
    from controlnet import annotators

    if is_inpaint(module):
        return 512, {}  # no sliders (clients send their defaults for every module)
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
