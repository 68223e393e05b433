"""Inpaint hint (control_v11p_sd15_inpaint): the image with masked pixels set to -1.

A uint8 image cannot hold -1, so the annotator returns RGBA: RGB = the image, A = 255 where the
user wants new content. `map_to_hint` turns any map into the float hint the network reads, applying
the -1 rule (A1111's `c * (1 - m) - m` for 4-channel hints).
"""

from __future__ import annotations

import cv2
import numpy as np

from controlnet.errors import InputError

from .registry import Param, register


class InpaintMap(np.ndarray):
    """The `inpaint` annotator's RGBA map, marked as such: the pipeline reads its alpha as the -1
    mask. A plain RGBA array or file is not marked (its alpha is transparency, as in training)."""


def mask_to_bool(mask, shape_hw: tuple[int, int]) -> np.ndarray:
    """White (> 127) or True = repaint; transparent = keep (`controlnet.images.mask_rgb`). Resized with
    nearest to the image size when it differs."""
    from controlnet.images import mask_rgb

    if isinstance(mask, np.ndarray) and mask.dtype == bool:
        mask = mask.astype(np.uint8) * 255
    grey = mask_rgb(mask).max(axis=2) * 255.0
    if grey.shape != tuple(shape_hw):
        grey = cv2.resize(grey, (shape_hw[1], shape_hw[0]), interpolation=cv2.INTER_NEAREST)
    return grey > 127


@register(
    "inpaint",
    feeds="inpaint (control_v11p_sd15_inpaint): masked pixels become -1 in the hint",
    summary="RGBA map: the image, alpha 255 where `mask` is white; map_to_hint() gives -1 there",
    kind="image",
    uses_resolution=False,
    params=(Param("mask", None, "mask image (path or array), white = repaint", type="image", required=True),),
)
def inpaint(image: np.ndarray, mask) -> np.ndarray:
    masked = mask_to_bool(mask, image.shape[:2])
    if not masked.any():
        raise InputError("the inpaint mask is empty: paint the region to regenerate in white (or True)")
    return np.dstack([image, masked.astype(np.uint8) * 255]).view(InpaintMap)


def map_to_hint(detected: np.ndarray) -> np.ndarray:
    """uint8 map (H×W×3, or H×W×4 from `inpaint`) -> float32 H×W×3 hint in [0, 1], -1 where masked."""
    if detected.dtype != np.uint8 or detected.ndim != 3 or detected.shape[2] not in (3, 4):
        raise InputError(f"expected an H×W×3 or H×W×4 uint8 map, got {detected.dtype} {detected.shape}")
    hint = detected[:, :, :3].astype(np.float32) / 255.0
    if detected.shape[2] == 4:
        hint[detected[:, :, 3] > 127] = -1.0
    return hint
