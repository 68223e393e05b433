"""Pictures in, one way: every image this package reads (condition maps, photos for the annotators,
training targets and conditions, masks) goes through `load_image` and `to_rgb` / `to_rgb8` here,
and every map is fitted to an output size by `fit` with one list of resize-mode names.

- load: a path, encoded bytes, a PIL image, a numpy array or a C×H×W tensor. The size in the file
  header is checked before any pixel is decoded (`MAX_PIXELS`), so a decompression bomb is an
  `InputError` naming the file and its pixel count; truncated and non-image files are
  `InputError`s too. 16-bit colour keeps its 16 bits (cv2 reads it; PIL cannot).
- RGB: grey is replicated and alpha is composited on white (the original `HWC3` rule: a transparent
  sketch reads as white paper), the same for sampling, annotating and training.
- masks (`mask_rgb`): white = act / repaint, but a transparent area is *not* masked: an alpha that is
  not fully opaque multiplies the colour (luminance × alpha, as sd-webui-controlnet's prepare_mask
  fix; A1111 reads the alpha of a drawn mask), so a white shape on a transparent layer is that shape.
- fit: A1111's three resize modes (stretch, cover + centre crop, contain + median-border fill).
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import cv2
import numpy as np

from controlnet.errors import InputError, MissingFileError

MAX_PIXELS = 12_000 * 12_000  # a 144 MP photo still fits; beyond that it is a mistake or a bomb

# canonical name -> accepted spellings (A1111 labels, its old aliases, its 0/1/2 enum, short forms)
RESIZE_MODES = {
    "just_resize": ("just_resize", "just resize", "resize", "stretch", "0"),
    "crop_and_resize": ("crop_and_resize", "crop and resize", "crop", "inner fit", "inner_fit", "1"),
    "resize_and_fill": ("resize_and_fill", "resize and fill", "fill", "outer fit", "outer_fit", "envelope", "2"),
}
NO_RESIZE = ("none", "no", "off")
_PIL_MODES_KEPT = ("L", "LA", "RGB", "RGBA", "I", "I;16", "I;16L", "I;16B", "F", "1")


def resize_mode(mode) -> str | None:
    """The canonical resize-mode name for any accepted spelling; None means "the map must fit"."""
    if mode is None:
        return None
    key = str(mode).strip().lower().replace("-", "_") if not isinstance(mode, bool) else "?"
    if key in NO_RESIZE:
        return None
    for name, spellings in RESIZE_MODES.items():
        if key in spellings or key.replace("_", " ") in spellings:
            return name
    raise InputError(
        f"unknown resize mode {mode!r}; use {', '.join(RESIZE_MODES)} or none "
        "(A1111 spellings such as 'Crop and Resize' or 0/1/2 work too)"
    )


# ---------------------------------------------------------------------------------------- loading


class TooManyPixels(InputError):
    """An image over the pixel limit (a decompression bomb, or a mistake), refused before decoding."""


def check_pixels(width: int, height: int, source: str = "the image", limit: int | None = None) -> None:
    """Refuse images larger than `limit` (default `MAX_PIXELS`) pixels before they are decoded."""
    limit = MAX_PIXELS if limit is None else limit
    if width * height > limit:
        raise TooManyPixels(
            f"{source} is {width}×{height} = {width * height:,} pixels ({width * height / 1e6:.1f} MP), more than "
            f"the {limit:,} accepted "
            "(a decompression bomb, or a mistake); downscale it first"
        )


def load_image(source, max_pixels: int | None = None) -> np.ndarray:
    """An image file (path) or encoded bytes as an array, keeping 16 bits and alpha; more than
    `max_pixels` (read from the header) is refused before decoding."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(lambda: io.BytesIO(bytes(source)), "the encoded image", bytes(source), max_pixels)
    path = Path(source)
    if path.is_dir():
        raise InputError(f"{path} is a folder, not an image file")
    if not path.is_file():
        if path.exists():
            raise InputError(f"{path} is not a regular file (a folder or a device); give a picture file")
        raise MissingFileError(f"image file not found: {path}")
    return _decode(lambda: path, str(path), None, max_pixels)


def _decode(opener, name: str, data: bytes | None, max_pixels: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    fix = "give a PNG, JPEG, WebP or TIFF file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit
            with Image.open(opener()) as im:
                check_pixels(*im.size, source=name, limit=max_pixels)
                if _is_16bit_colour(im):
                    deep = _read_16bit_colour(name if data is None else None, data)
                    if deep is not None:
                        return deep
                im.load()
                return pil_to_array(im)
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(pixels.group(1)):,} pixels" if pixels else "too many pixels"
        raise TooManyPixels(f"{name} holds {count}, more than the {max_pixels:,} accepted "
                            "(a decompression bomb, or a mistake); downscale it first") from None
    except UnidentifiedImageError:
        raise InputError(f"cannot read {name} as an image: it is not a picture file (or a format not supported); {fix}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read {name} as an image: the file is damaged or cut short ({exc}); {fix}") from None


def _is_16bit_colour(im) -> bool:
    """The header says 16-bit colour (PIL would read it as 8 bits): raw mode 'RGB;16B' and the like."""
    if im.mode not in ("RGB", "RGBA"):
        return False
    raw = [t[3] if isinstance(t[3], str) else (t[3] or ("",))[0] for t in im.tile]  # t[3]: the raw mode
    return any(";16" in str(r) for r in raw)


def _read_16bit_colour(path: str | None, data: bytes | None) -> np.ndarray | None:
    """16-bit colour (PNG/TIFF) as RGB[A] uint16 via cv2, or None when the image is 8-bit."""
    if path is not None:
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    else:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 3 or raw.dtype != np.uint16:
        return None
    return cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB)


def pil_to_array(im) -> np.ndarray:
    """A PIL image as an array with its real bit depth (palette expanded, CMYK etc. to RGB)."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode not in _PIL_MODES_KEPT:
        im = im.convert("RGB")
    arr = np.array(im)
    if im.mode.startswith("I;16"):
        arr = arr.astype(np.uint16)
    return arr


# ------------------------------------------------------------------------------------- conversion


def as_array(image) -> np.ndarray:
    """Any image (path, bytes, PIL, numpy H×W[×C], C×H×W tensor) -> H×W or H×W×C array, checked."""
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        image = load_image(image)
    elif not isinstance(image, np.ndarray):
        image = _from_object(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (2, 3, 4)):
        raise InputError(f"expected an H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    check_pixels(image.shape[1], image.shape[0])
    return image


def _from_object(image) -> np.ndarray:
    """A tensor or PIL image as an array."""
    import torch
    from PIL import Image

    if torch.is_tensor(image):
        t = image.detach().float().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3, 4):
            raise InputError(f"a tensor image must be C×H×W with 1, 3 or 4 channels, got shape {tuple(image.shape)}")
        return t.permute(1, 2, 0).numpy()
    if isinstance(image, Image.Image):
        check_pixels(*image.size)
        return pil_to_array(image)
    raise InputError(f"expected an image (file path, PIL image, numpy array or tensor), got {type(image).__name__}")


def to_float(arr: np.ndarray) -> np.ndarray:
    """Integer/bool/float pixel values -> float32 in [0, 1] (8 or 16 bits decided by dtype or range)."""
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise InputError(f"the float image holds NaN or infinite values ({bad:,} of {arr.size:,}); "
                             "give finite values in [0, 1]")
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
    """Any image -> H×W×3 float32 in [0, 1]: grey replicated, alpha composited on white, 16 bits kept."""
    x = to_float(as_array(image))
    if x.ndim == 2:
        return np.ascontiguousarray(np.repeat(x[:, :, None], 3, axis=2))
    if x.shape[2] == 3:
        return np.ascontiguousarray(x)
    colour, alpha = x[:, :, :-1], x[:, :, -1:]
    if colour.shape[2] == 1:
        colour = np.repeat(colour, 3, axis=2)
    return np.ascontiguousarray(colour * alpha + (1.0 - alpha))


def mask_rgb(image) -> np.ndarray:
    """A mask image -> H×W×3 float32 in [0, 1] (1 = white = masked). With an alpha channel that is not
    fully opaque, colour × alpha: transparent reads as black (not masked), not as white paper."""
    x = to_float(as_array(image))
    if x.ndim == 3 and x.shape[2] in (2, 4) and (x[:, :, -1] < 1.0).any():
        colour = x[:, :, :-1] * x[:, :, -1:]
        return np.ascontiguousarray(colour if colour.shape[2] == 3 else np.repeat(colour, 3, axis=2))
    return to_rgb(x)


def to_rgb8(image) -> np.ndarray:
    """Any image -> H×W×3 uint8: `to_rgb` rounded to 8 bits (8-bit RGB and grey pass untouched)."""
    arr = as_array(image)
    if arr.dtype == np.uint8 and (arr.ndim == 2 or arr.shape[2] == 3):
        return np.ascontiguousarray(arr if arr.ndim == 3 else np.repeat(arr[:, :, None], 3, axis=2))
    return (to_rgb(arr) * 255.0).round().astype(np.uint8)


# ------------------------------------------------------------------------------------------ fitting


def resize_auto(x: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """A1111's `high_quality_resize` for a float H×W×3 map of unknown kind: nearest for label-like
    maps (2 < colours < 200: segmentation, pose), INTER_AREA to shrink, INTER_CUBIC to enlarge."""
    w, h = size_wh
    if x.shape[1] == w and x.shape[0] == h:
        return x
    sample = x[:: max(1, x.shape[0] // 256), :: max(1, x.shape[1] // 256)]
    colours = len(np.unique((sample * 255).round().reshape(-1, 3), axis=0))
    if 2 < colours < 200:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if w * h < x.shape[0] * x.shape[1] else cv2.INTER_CUBIC
    return np.clip(cv2.resize(x, (w, h), interpolation=interp), 0.0, 1.0)


def fit(x: np.ndarray, size_wh: tuple[int, int], mode: str | None, resize=resize_auto) -> np.ndarray:
    """Fit an H×W×C map to `size_wh` as A1111's `detectmap_proc` does; `resize(x, (w, h))` scales.

    just_resize: stretch. crop_and_resize: scale to cover, centre-crop. resize_and_fill: scale to
    fit inside, centre on a canvas of the median border colour (not black, which would read as
    "no edge"/"far away" to most ControlNets). None: the map must already have the size.
    """
    w, h = size_wh
    h0, w0 = x.shape[:2]
    mode = resize_mode(mode)
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
    canvas = np.empty((h, w, x.shape[2]), dtype=x.dtype)
    canvas[:] = np.median(border, axis=0).astype(x.dtype)
    top, left = max(0, (h - sh) // 2), max(0, (w - sw) // 2)
    canvas[top : top + sh, left : left + sw] = scaled[:h, :w]
    return canvas
