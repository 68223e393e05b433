"""Condition images in, hint tensors out, for the pipeline.

A hint is what every stack feeds a ControlNet: RGB, float in [0, 1], NCHW, the size of the output
image. Reading, RGB conversion (one alpha rule) and the resize modes live in `controlnet.images`,
shared with the annotators and the trainer; this module only turns their arrays into tensors.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from controlnet.errors import InputError
from controlnet.images import (  # noqa: F401 - the pipeline's public names, kept for importers
    NO_RESIZE,
    RESIZE_MODES,
    as_array,
    fit,
    load_image,
    mask_rgb,
    pil_to_array,
    resize_mode,
    to_float,
    to_rgb,
)
from controlnet.images import resize_auto as resize  # noqa: F401


def hint_tensor(image, width: int, height: int, mode: str | None = "crop_and_resize") -> torch.Tensor:
    """A (1, 3, height, width) float32 hint in [0, 1] from any image; an inpaint hint (see
    `split_inpaint_hint`) keeps -1 in its masked pixels, and resize_and_fill's border is masked too."""
    mode = resize_mode(mode)
    parts = split_inpaint_hint(image)
    if parts is None:
        x = fit(to_rgb(image), (width, height), mode)
    else:
        rgb, masked = parts
        m = fit_mask(masked, (width, height), mode)[:, :, None]
        x = np.where(m, np.float32(-1.0), fit(rgb, (width, height), mode))
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


def split_inpaint_hint(image) -> tuple[np.ndarray, np.ndarray] | None:
    """(RGB in [0, 1], bool mask) of an inpaint hint, else None. An inpaint hint is the `inpaint`
    annotator's map object (RGBA, alpha 255 = repaint) or a float map holding -1 in its masked
    pixels (diffusers' `make_inpaint_condition`). RGBA files are not: their alpha is transparency
    (composited on white, as in training), so a transparent sketch stays a sketch."""
    from controlnet.annotators.inpaint import InpaintMap, map_to_hint

    if isinstance(image, InpaintMap):
        image = map_to_hint(np.asarray(image))
    if not (torch.is_tensor(image) and image.is_floating_point()
            or isinstance(image, np.ndarray) and np.issubdtype(image.dtype, np.floating)):
        return None
    x = as_array(image)
    minus = x == -1.0
    if x.ndim != 3 or x.shape[2] != 3 or not minus.any():
        return None
    masked = minus.all(axis=2)
    if (minus.any(axis=2) != masked).any():
        raise InputError("an inpaint hint must be -1 in all three channels of a masked pixel; some pixels are -1 "
                         "in only one or two channels")
    rgb = np.where(masked[:, :, None], np.float32(0.0), x)
    return to_rgb(rgb.astype(np.float32)), masked


def picture_area(shape_hw: tuple[int, int], size_wh: tuple[int, int], mode: str | None) -> np.ndarray:
    """Where `fit` puts a picture of `shape_hw` on the output: all of it, except resize_and_fill's
    border. Found by fitting a zero map whose scaled copy is ones (the border fill stays 0)."""
    w, h = size_wh
    if tuple(shape_hw) == (h, w) or resize_mode(mode) != "resize_and_fill":
        return np.ones((h, w), bool)
    ones = lambda _, wh: np.ones((wh[1], wh[0], 1), np.float32)  # noqa: E731
    return fit(np.zeros((*shape_hw, 1), np.float32), size_wh, "resize_and_fill", resize=ones)[:, :, 0] > 0.5


def fit_mask(mask: np.ndarray, size_wh: tuple[int, int], mode: str | None) -> np.ndarray:
    """A bool H×W mask fitted like its picture (smooth resize, re-thresholded at 0.5, as diffusers
    binarizes); resize_and_fill's border counts as masked: that is what outpainting fills."""
    def smooth(x, wh):
        shrink = wh[0] * wh[1] < x.shape[0] * x.shape[1]
        return cv2.resize(x, wh, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)[:, :, None]

    fitted = fit(mask.astype(np.float32)[:, :, None], size_wh, mode, resize=smooth)[:, :, 0] >= 0.5
    return fitted | ~picture_area(mask.shape[:2], size_wh, mode)


def mask_tensor(mask, width: int, height: int) -> torch.Tensor:
    """A (1, 1, height, width) region mask in [0, 1]: 1 where the unit acts. Any image works; its
    mean over RGB is taken (a transparent area counts as 0: `controlnet.images.mask_rgb`)."""
    x = mask_rgb(mask).mean(axis=2, keepdims=True)
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
