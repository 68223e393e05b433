"""Image plumbing shared by every annotator: input conversion, detect resolution, output resize.

Conventions follow the A1111 extension (sd-webui-controlnet): the detector sees the image with its
short side scaled to `resolution` (INTER_CUBIC up, INTER_AREA down); "pixel perfect" picks that
resolution so the detector runs at the output size; the map is then fitted to the output size with
one of the three resize modes.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from controlnet.errors import InputError
from controlnet.images import fit, load_image, resize_mode  # noqa: F401 - load_image is re-exported
from controlnet.images import to_rgb8 as to_rgb  # noqa: F401 - annotators work on 8-bit RGB

MAX_DETECT_SIDE = 8192  # long side of the image a detector runs on


def resize_short_side(image: np.ndarray, resolution: int) -> np.ndarray:
    """Scale so the short side equals `resolution` (A1111 `resize_image_with_pad`, without the pad)."""
    h, w = image.shape[:2]
    k = float(resolution) / float(min(h, w))
    new_h, new_w = max(1, int(np.round(h * k))), max(1, int(np.round(w * k)))
    if max(new_h, new_w) > MAX_DETECT_SIDE:
        raise InputError(
            f"detect size {new_w}×{new_h} is too large (long side > {MAX_DETECT_SIDE}); "
            "lower `resolution` or crop the image's extreme aspect ratio"
        )
    if (new_h, new_w) == (h, w):
        return image
    interpolation = cv2.INTER_CUBIC if k > 1 else cv2.INTER_AREA
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def pad_to_multiple(image: np.ndarray, multiple: int = 64) -> tuple[np.ndarray, tuple[int, int]]:
    """Edge-pad bottom/right to a multiple (networks with strided pooling need it); returns the crop size."""
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad, mode="edge"), (h, w)


def network_size(h: int, w: int, short: int, longest: int) -> tuple[int, int]:
    """(height, width) after detectron2's ResizeShortestEdge / mmcv's keep-ratio rescale: short side to
    `short` unless that takes the long side past `longest`; rounded half up."""
    scale = min(short / min(h, w), longest / max(h, w))
    return int(h * scale + 0.5), int(w * scale + 0.5)


def pixel_perfect_resolution(
    image_hw: tuple[int, int], target_hw: tuple[int, int], resize_mode: str = "crop_and_resize"
) -> int:
    """The detect resolution that makes the map come out at exactly the target size (A1111's rule)."""
    mode = map_resize_mode(resize_mode)
    raw_h, raw_w = image_hw
    k0, k1 = target_hw[0] / raw_h, target_hw[1] / raw_w
    k = min(k0, k1) if mode == "resize_and_fill" else max(k0, k1)
    return int(np.round(k * min(raw_h, raw_w)))


def map_resize_mode(mode) -> str:
    """The canonical name of a resize mode for an annotator map (any spelling `controlnet.images`
    accepts). "none" is refused: a map is always fitted to the output size."""
    name = resize_mode(mode)
    if name is None:
        raise InputError(f"resize mode {mode!r} is not available for annotators; the map is always fitted to "
                         "the output size (just_resize, crop_and_resize or resize_and_fill)")
    return name


def resize_map(detected: np.ndarray, size_wh: tuple[int, int], kind: str) -> np.ndarray:
    """Resize a map with the interpolation its kind needs.

    label/edge: nearest (palette colours and 1-px lines must survive); binary: smooth then re-threshold
    at 127 so it stays black/white; image: INTER_AREA to shrink, INTER_CUBIC to enlarge.
    An alpha channel (the inpaint mask) is always resized nearest.
    """
    w, h = size_wh
    if detected.shape[1] == w and detected.shape[0] == h:
        return detected
    if detected.ndim == 3 and detected.shape[2] == 4:
        colour = resize_map(detected[:, :, :3], size_wh, kind)
        alpha = cv2.resize(detected[:, :, 3], (w, h), interpolation=cv2.INTER_NEAREST)
        return np.dstack([colour, alpha])
    if kind in ("label", "edge"):
        return cv2.resize(detected, (w, h), interpolation=cv2.INTER_NEAREST)
    shrinking = w * h < detected.shape[0] * detected.shape[1]
    out = cv2.resize(detected, (w, h), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
    if kind == "binary":
        out = np.where(out > 127, 255, 0).astype(np.uint8)
    return out


def fit_map(detected: np.ndarray, size_wh: tuple[int, int], kind: str, mode: str = "just_resize") -> np.ndarray:
    """Fit a map to the output size with `controlnet.images.fit` (stretch, cover + crop, contain +
    median-border fill), resizing with the interpolation its kind needs (`resize_map`)."""
    return fit(detected, size_wh, map_resize_mode(mode), resize=functools.partial(resize_map, kind=kind))


def gray3(single: np.ndarray) -> np.ndarray:
    """One channel uint8 -> three identical channels (the maps checkpoints read are RGB)."""
    return np.ascontiguousarray(np.repeat(single[:, :, None], 3, axis=2))
