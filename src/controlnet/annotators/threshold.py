"""Per-pixel maps for user drawings: scribble, binary, threshold, invert.

Users draw black on white; checkpoints read white strokes on black. These turn one into the other.
"""

from __future__ import annotations

import cv2
import numpy as np

from .image import gray3
from .registry import Param, register


@register(
    "scribble",
    feeds="scribble (control_sd15_scribble, control_v11p_sd15_scribble)",
    summary="a black-on-white drawing -> white strokes on black (darkest channel below threshold)",
    kind="binary",
    params=(Param("threshold", 127, "pixels whose darkest channel is below this become strokes", minimum=0, maximum=255),),
)
def scribble(image: np.ndarray, threshold: int) -> np.ndarray:
    out = np.zeros(image.shape[:2], np.uint8)
    out[np.min(image, axis=2) < threshold] = 255
    return gray3(out)


@register(
    "binary",
    feeds="scribble (control_v11p_sd15_scribble)",
    summary="grey < threshold -> white, else black (A1111 'binary'); threshold 0 or 255 = Otsu",
    kind="binary",
    params=(Param("threshold", 0, "grey cut-off; 0 or 255 picks it automatically (Otsu)", minimum=0, maximum=255),),
)
def binary(image: np.ndarray, threshold: int) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    flags = cv2.THRESH_BINARY_INV | (cv2.THRESH_OTSU if threshold in (0, 255) else 0)
    _, out = cv2.threshold(grey, threshold, 255, flags)
    return gray3(out)


@register(
    "threshold",
    feeds="scribble-like checkpoints that read bright shapes (A1111 'threshold')",
    summary="white where the darkest channel is above threshold (bright regions), black elsewhere",
    kind="binary",
    params=(Param("threshold", 127, "darkest-channel cut-off", minimum=0, maximum=255),),
)
def threshold(image: np.ndarray, threshold: int) -> np.ndarray:
    out = np.zeros(image.shape[:2], np.uint8)
    out[np.min(image, axis=2) > threshold] = 255
    return gray3(out)


@register(
    "invert",
    feeds="any line checkpoint (canny, scribble, lineart, mlsd) given a black-line-on-white drawing",
    summary="255 - image: turns a black-on-white line drawing into the white-on-black map models read",
    kind="image",
)
def invert(image: np.ndarray) -> np.ndarray:
    return 255 - image
