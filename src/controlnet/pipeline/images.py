"""Condition images in, hint tensors out: RGB conversion, the three A1111 resize modes, masks.

A hint is what every stack feeds a ControlNet: RGB, float in [0, 1], NCHW, the size of the output
image. We keep it float from the start, so a 16-bit depth map keeps its 16 bits of precision
instead of being rounded to 8 on the way in.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

from controlnet.errors import InputError, MissingFileError

# canonical name -> accepted spellings (A1111 labels, its old aliases, its 0/1/2 enum, short forms)
RESIZE_MODES = {
    "just_resize": ("just_resize", "just resize", "resize", "stretch", "0"),
    "crop_and_resize": ("crop_and_resize", "crop and resize", "crop", "inner fit", "inner_fit", "1"),
    "resize_and_fill": ("resize_and_fill", "resize and fill", "fill", "outer fit", "outer_fit", "envelope", "2"),
}
NO_RESIZE = ("none", "no", "off")


def resize_mode(mode) -> str | None:
    """The canonical resize-mode name for any accepted spelling; None means "the hint must fit"."""
    if mode is None:
        return None
    key = str(mode).strip().lower().replace("-", "_") if not isinstance(mode, bool) else "?"
    if key in NO_RESIZE:
        return None
    for name, spellings in RESIZE_MODES.items():
        if key in spellings or key.replace("_", " ") in spellings:
            return name
    raise InputError(
        f"unknown resize mode {mode!r}; use just_resize, crop_and_resize (default), resize_and_fill or none"
    )


def load_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as an array, keeping 16 bits and alpha (cv2 reads 16-bit colour; PIL cannot)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"image file not found: {path}")
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is not None and data.ndim == 3 and data.dtype == np.uint16:  # 16-bit colour PNG/TIFF
        return cv2.cvtColor(data, cv2.COLOR_BGRA2RGBA if data.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_array(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); give a PNG, JPEG, WebP or TIFF file") from None


def pil_to_array(im) -> np.ndarray:
    """A PIL image as an array with its real bit depth (palette expanded, CMYK etc. to RGB)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode not in ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16L", "I;16B", "F", "1"):
        im = im.convert("RGB")
    arr = np.array(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return arr


def to_float(arr: np.ndarray) -> np.ndarray:
    """Integer/bool/float pixel values -> float32 in [0, 1] (8 or 16 bits decided by dtype or range)."""
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InputError("the image holds NaN or infinite values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(f"float images must hold values in [0, 1] (this one spans {lo:g}..{hi:g}); divide by 255")
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise InputError(f"integer pixel values {lo}..{hi} fit neither 8 nor 16 bits")
        sixteen = arr.dtype == np.uint16 or (arr.dtype != np.uint8 and hi > 255)
        return arr.astype(np.float32) / (65535.0 if sixteen else 255.0)
    raise InputError(f"unsupported image dtype {arr.dtype}")


def to_rgb(image) -> np.ndarray:
    """Any image (path, PIL, numpy H×W[×1|2|3|4], CHW tensor in [0, 1]) -> H×W×3 float32 in [0, 1].

    Grey is replicated; alpha is composited on white, as the original `HWC3` does, so a transparent
    sketch reads as white paper; 16-bit stays 16-bit.
    """
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    elif torch.is_tensor(image):
        t = image.detach().float().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise InputError(f"a tensor image must be C×H×W with 1, 3 or 4 channels, got shape {tuple(image.shape)}")
        image = t.permute(1, 2, 0).numpy()
    elif not isinstance(image, np.ndarray):
        from PIL import Image

        if not isinstance(image, Image.Image):
            raise InputError(f"expected an image (file path, PIL image, numpy array or tensor), got {type(image).__name__}")
        image = pil_to_array(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise InputError(f"expected an H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    x = to_float(image)
    if x.ndim == 2:
        return np.ascontiguousarray(np.repeat(x[:, :, None], 3, axis=2))
    if x.shape[2] == 3:
        return np.ascontiguousarray(x)
    colour, alpha = x[:, :, :-1], x[:, :, -1:]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour * alpha + (1.0 - alpha))


def resize(x: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """A1111's `high_quality_resize` interpolation choice: nearest for label-like maps (2 < colours
    < 200: segmentation, pose), INTER_AREA to shrink, INTER_CUBIC to enlarge (clipped to [0, 1])."""
    w, h = size_wh
    if x.shape[1] == w and x.shape[0] == h:
        return x
    colours = len(np.unique((x[:: max(1, x.shape[0] // 256), :: max(1, x.shape[1] // 256)] * 255).round().reshape(-1, 3), axis=0))
    if 2 < colours < 200:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if w * h < x.shape[0] * x.shape[1] else cv2.INTER_CUBIC
    return np.clip(cv2.resize(x, (w, h), interpolation=interp), 0.0, 1.0)


def fit(x: np.ndarray, size_wh: tuple[int, int], mode: str | None) -> np.ndarray:
    """Fit an H×W×3 map to `size_wh` as A1111's `detectmap_proc` does.

    just_resize: stretch. crop_and_resize: scale to cover, centre-crop. resize_and_fill: scale to
    fit inside, centre on a canvas of the median border colour (not black, which would read as
    "no edge"/"far away" to most ControlNets). None: the map must already have the size.
    """
    w, h = size_wh
    h0, w0 = x.shape[:2]
    if (h0, w0) == (h, w):
        return x
    if mode is None:
        raise InputError(
            f"the condition image is {w0}×{h0} but the output is {w}×{h} and resize is off; "
            "give a matching image or a resize mode (just_resize, crop_and_resize, resize_and_fill)"
        )
    if mode == "just_resize":
        return resize(x, (w, h))
    k = max(h / h0, w / w0) if mode == "crop_and_resize" else min(h / h0, w / w0)
    sw, sh = max(1, int(np.round(w0 * k))), max(1, int(np.round(h0 * k)))
    scaled = resize(x, (sw, sh))
    if mode == "crop_and_resize":
        top, left = max(0, (sh - h) // 2), max(0, (sw - w) // 2)
        return np.ascontiguousarray(scaled[top : top + h, left : left + w])
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]], axis=0)
    canvas = np.empty((h, w, 3), dtype=np.float32)
    canvas[:] = np.median(border, axis=0)
    top, left = max(0, (h - sh) // 2), max(0, (w - sw) // 2)
    canvas[top : top + sh, left : left + sw] = scaled[:h, :w]
    return canvas


def hint_tensor(image, width: int, height: int, mode: str | None = "crop_and_resize") -> torch.Tensor:
    """A (1, 3, height, width) float32 hint in [0, 1] from any image."""
    x = fit(to_rgb(image), (width, height), resize_mode(mode))
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


def mask_tensor(mask, width: int, height: int) -> torch.Tensor:
    """A (1, 1, height, width) region mask in [0, 1]: 1 where the unit acts. Any image works; its
    mean over RGB is taken (alpha is composited on white, so a transparent area counts as 1)."""
    x = to_rgb(mask).mean(axis=2, keepdims=True)
    if x.shape[:2] != (height, width):
        x = cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA)[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


def image_size(image) -> tuple[int, int]:
    """(width, height) of an image without converting it more than needed."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray) and not torch.is_tensor(image):
        return tuple(image.size)
    x = to_rgb(image)
    return x.shape[1], x.shape[0]


def to_pil(x: np.ndarray | torch.Tensor):
    """H×W×3 float in [0, 1] (or a 1×3×H×W / 3×H×W tensor) -> 8-bit RGB PIL image."""
    from PIL import Image

    if torch.is_tensor(x):
        t = x.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        x = t.permute(1, 2, 0).numpy()
    return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8))
