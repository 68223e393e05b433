"""`annotate()`: photo in, condition map out, in the convention the matching checkpoints expect."""

from __future__ import annotations

import numpy as np

from controlnet.errors import InputError, MissingFileError

from .image import (
    MAX_DETECT_SIDE,
    fit_map,
    map_resize_mode,
    pixel_perfect_resolution,
    resize_short_side,
    to_rgb,
)
from .local_models import find_weight, missing_weight, models_dir, on_device
from .registry import get_annotator


def annotate(
    name: str,
    image,
    resolution: int = 512,
    *,
    width: int | None = None,
    height: int | None = None,
    pixel_perfect: bool = False,
    resize_mode: str = "just_resize",
    models_dir=None,
    device=None,
    **params,
) -> np.ndarray:
    """Run annotator `name` on `image` and return an H×W×3 uint8 RGB map (H×W×4 for `inpaint`).

    image: numpy array (grey, RGB, RGBA; uint8, uint16, bool or float in [0, 1]), PIL image or path.
    resolution: the detector sees the image with its short side scaled to this (A1111 "Preprocessor
        resolution"); ignored by annotators that work on the full image (tile, inpaint).
    width, height: output size; default the input's size. `resize_mode` says how the map is fitted
        when the aspect ratio differs: just_resize, crop_and_resize, resize_and_fill (A1111's
        names and aliases such as "Crop and Resize" or 1 are accepted).
    pixel_perfect: choose `resolution` so the detector runs at the output size (A1111 "Pixel Perfect").
    models_dir: the folder of the detectors' weights (else $CONTROLNET_ANNOTATOR_DIR); a learned
        annotator not given `model` reads its published file there (flat or sd-webui-controlnet's layout).
    device: where the learned networks run ("cpu", "cuda", "cuda:1", "mps"; default the CPU, or the device
        of an enclosing `local_models.on_device`); the map is the same, up to the device's float rounding.
    params: the annotator's own parameters; `controlnet annotators` lists them with defaults.
    """
    spec = get_annotator(name)
    values = spec.bind(with_weights(spec, params, models_dir))
    resize_mode = map_resize_mode(resize_mode)
    rgb = to_rgb(image)
    h0, w0 = rgb.shape[:2]
    out_w, out_h = _output_size(width, height, w0, h0)
    if pixel_perfect:
        resolution = pixel_perfect_resolution((h0, w0), (out_h, out_w), resize_mode)
    resolution = _check_resolution(resolution)
    detect_input = resize_short_side(rgb, resolution) if spec.uses_resolution else rgb
    with on_device(device):
        detected = spec.fn(detect_input, **values)
    detected = _check_map(detected, spec.name)
    return fit_map(detected, (out_w, out_h), spec.kind, resize_mode)


def weights_found(spec, folder=None):
    """Where `spec`'s weights are in the models folder (`folder`, else $CONTROLNET_ANNOTATOR_DIR), or None."""
    folder = models_dir(folder)
    return find_weight(spec.weights[0], folder) if spec.weights and folder is not None else None


def with_weights(spec, params: dict, folder=None) -> dict:
    """`params` with `model` taken from the models folder when the annotator reads published weights and
    none was given; a required one that is missing there is named in one line (file, place, source)."""
    if not spec.weights or params.get("model") is not None:
        return params
    found = weights_found(spec, folder)
    if found is not None:
        return {**params, "model": str(found)}
    if any(p.name == "model" and p.required for p in spec.params):
        place = models_dir(folder)
        raise MissingFileError(missing_weight(spec.weights[0], spec.name, place)
                               + ("" if place else "; or give its path as model= (CLI: --param model=FILE)"))
    return params


def _output_size(width, height, w0: int, h0: int) -> tuple[int, int]:
    if width is None and height is None:
        return w0, h0
    if width is None:  # keep the aspect ratio from the one side given
        width = max(1, round(w0 * int(height) / h0))
    if height is None:
        height = max(1, round(h0 * int(width) / w0))
    for side, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_DETECT_SIDE:
            raise InputError(f"output {side} must be an integer in 1..{MAX_DETECT_SIDE}, got {value!r}")
    return int(width), int(height)


def _check_resolution(resolution) -> int:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer, float)):
        raise InputError(f"resolution must be an integer number of pixels, got {resolution!r}")
    if not float(resolution).is_integer() or not 16 <= resolution <= MAX_DETECT_SIDE:
        raise InputError(f"resolution must be an integer in 16..{MAX_DETECT_SIDE} (A1111 default 512), got {resolution!r}")
    return int(resolution)


def _check_map(detected, name: str) -> np.ndarray:
    """Guard the contract every annotator promises: uint8, three channels (four for inpaint)."""
    if detected.dtype != np.uint8 or detected.ndim != 3 or detected.shape[2] not in (3, 4):
        raise AssertionError(f"annotator {name} returned {detected.dtype} {detected.shape}, not H×W×3 uint8")
    return detected
