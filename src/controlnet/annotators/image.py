"""Image plumbing shared by every annotator: input conversion, detect resolution, output resize.

Conventions follow the A1111 extension (sd-webui-controlnet): the detector sees the image with its
short side scaled to `resolution` (INTER_CUBIC up, INTER_AREA down); "pixel perfect" picks that
resolution so the detector runs at the output size; the map is then fitted to the output size with
one of the three resize modes.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from controlnet.errors import InputError, MissingFileError

MAX_INPUT_PIXELS = 12_000 * 12_000  # a 144 MP photo still fits; beyond that it is a mistake, not a photo
MAX_DETECT_SIDE = 8192  # long side of the image a detector runs on
RESIZE_MODES = ("just_resize", "crop_and_resize", "resize_and_fill")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as an array, keeping 16-bit and alpha so `to_rgb` can convert them."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":  # palette images: expand, keep transparency if any
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
                im = im.convert("RGB")
            return np.array(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); give a PNG, JPEG, WebP or TIFF file") from exc


def to_rgb(image) -> np.ndarray:
    """Any reasonable image -> H×W×3 uint8 RGB.

    Grey is replicated, alpha is composited on white (as the original `HWC3` does, so transparent
    sketches read as white paper), 16-bit is scaled by 1/257, float must be in [0, 1].
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif not isinstance(image, np.ndarray):
        try:
            from PIL import Image

            if isinstance(image, Image.Image):
                image = np.array(image.convert("RGBA") if image.mode in ("P", "PA") else image)
        except ImportError:  # pragma: no cover - pillow is a dependency
            pass
    if not isinstance(image, np.ndarray):
        raise InputError(f"expected an image (numpy array, PIL image or file path), got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise InputError(
            f"expected an H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) image, got shape {image.shape}"
        )
    h, w = image.shape[:2]
    if h == 0 or w == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    if h * w > MAX_INPUT_PIXELS:
        raise InputError(
            f"the image is {w}×{h} = {h * w / 1e6:.0f} MP, more than the {MAX_INPUT_PIXELS / 1e6:.0f} MP "
            "accepted; downscale it first (the detector runs at `resolution` anyway)"
        )
    image = _to_uint8(image)
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.shape[2] == 3:
        return np.ascontiguousarray(image)
    colour = image[:, :, :-1].astype(np.float32)
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    alpha = image[:, :, -1:].astype(np.float32) / 255.0
    return (colour * alpha + 255.0 * (1.0 - alpha)).clip(0, 255).round().astype(np.uint8)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if np.issubdtype(image.dtype, np.floating):
        lo, hi = float(np.nanmin(image)), float(np.nanmax(image))
        if not np.isfinite(image).all() or lo < 0.0 or hi > 1.0:
            raise InputError(
                f"float images must hold values in [0, 1] (this one spans {lo:g}..{hi:g}); "
                "divide by 255 or give uint8"
            )
        return (image * 255.0).round().astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        lo, hi = int(image.min()), int(image.max())
        if image.dtype == np.uint16 or (lo >= 0 and 255 < hi <= 65535):
            return (image.astype(np.float32) / 257.0).round().astype(np.uint8)  # 16-bit -> 8-bit
        if lo >= 0 and hi <= 255:
            return image.astype(np.uint8)
        raise InputError(f"integer image values {lo}..{hi} fit neither 8 nor 16 bits")
    raise InputError(f"unsupported image dtype {image.dtype}")


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


def pixel_perfect_resolution(
    image_hw: tuple[int, int], target_hw: tuple[int, int], resize_mode: str = "crop_and_resize"
) -> int:
    """The detect resolution that makes the map come out at exactly the target size (A1111's rule)."""
    check_resize_mode(resize_mode)
    raw_h, raw_w = image_hw
    k0, k1 = target_hw[0] / raw_h, target_hw[1] / raw_w
    k = min(k0, k1) if resize_mode == "resize_and_fill" else max(k0, k1)
    return int(np.round(k * min(raw_h, raw_w)))


def check_resize_mode(mode: str) -> str:
    if mode not in RESIZE_MODES:
        raise InputError(f"unknown resize mode {mode!r}; use one of {', '.join(RESIZE_MODES)}")
    return mode


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
    """Fit a map to the output size: stretch, crop-and-resize (cover) or resize-and-fill (contain).

    Resize-and-fill pads with the median border colour, as A1111 does, not with black.
    """
    check_resize_mode(mode)
    w, h = size_wh
    if mode == "just_resize":
        return resize_map(detected, size_wh, kind)
    dh, dw = detected.shape[:2]
    k = max(h / dh, w / dw) if mode == "crop_and_resize" else min(h / dh, w / dw)
    sw, sh = max(1, int(np.round(dw * k))), max(1, int(np.round(dh * k)))
    scaled = resize_map(detected, (sw, sh), kind)
    if mode == "crop_and_resize":
        top, left = (sh - h) // 2, (sw - w) // 2
        return np.ascontiguousarray(scaled[top : top + h, left : left + w])
    border = np.concatenate([detected[0], detected[-1], detected[:, 0], detected[:, -1]], axis=0)
    fill = np.median(border, axis=0).astype(np.uint8)
    canvas = np.empty((h, w, detected.shape[2]), dtype=np.uint8)
    canvas[:] = fill
    top, left = (h - sh) // 2, (w - sw) // 2
    canvas[top : top + sh, left : left + sw] = scaled
    return canvas


def gray3(single: np.ndarray) -> np.ndarray:
    """One channel uint8 -> three identical channels (the maps checkpoints read are RGB)."""
    return np.ascontiguousarray(np.repeat(single[:, :, None], 3, axis=2))
