"""Edge-like maps with no weights: canny, lineart_standard, scribble_xdog, a classical soft edge.

All are white strokes on black, the polarity canny/softedge/scribble/lineart checkpoints read (the
demos only *display* the inverse). Formulas are those of ControlNet 1.1 / the A1111 extension.
"""

from __future__ import annotations

import cv2
import numpy as np

from .image import gray3
from .registry import Param, register


@register(
    "canny",
    feeds="canny (control_sd15_canny, control_v11p_sd15_canny, diffusers *-canny, SDXL canny)",
    summary="cv2.Canny on the RGB image at the detect resolution; white 1-px edges on black",
    kind="edge",
    params=(
        Param("low_threshold", 100, "hysteresis low threshold", minimum=0, maximum=1000),
        Param("high_threshold", 200, "hysteresis high threshold", minimum=0, maximum=1000),
    ),
)
def canny(image: np.ndarray, low_threshold: int, high_threshold: int) -> np.ndarray:
    """Exactly `cv2.Canny(rgb, low, high)`, as every reference implementation calls it."""
    return gray3(cv2.Canny(image, low_threshold, high_threshold))


@register(
    "lineart_standard",
    feeds="lineart (control_v11p_sd15_lineart), lineart_anime; also usable for scribble/softedge",
    summary="darkness relative to a Gaussian blur (A1111 'lineart_standard (from white bg & black line)')",
    kind="image",
    params=(
        Param("gaussian_sigma", 6.0, "blur sigma of the local background estimate", minimum=0.1),
        Param("intensity_threshold", 8, "only values above this set the normalising median", minimum=0),
    ),
)
def lineart_standard(image: np.ndarray, gaussian_sigma: float, intensity_threshold: int) -> np.ndarray:
    """Pixels darker than their surroundings become white lines; contrast is normalised by the median."""
    x = image.astype(np.float32)
    background = cv2.GaussianBlur(x, (0, 0), gaussian_sigma)
    intensity = np.min(background - x, axis=2).clip(0, 255)
    strong = intensity[intensity > intensity_threshold]
    intensity /= max(16.0, float(np.median(strong))) if strong.size else 16.0
    intensity *= 127
    return gray3(intensity.clip(0, 255).astype(np.uint8))


@register(
    "scribble_xdog",
    feeds="scribble (control_sd15_scribble, control_v11p_sd15_scribble)",
    summary="difference of Gaussians (sigma 0.5 and 5) thresholded into white scribble strokes",
    kind="binary",
    params=(Param("threshold", 32, "XDoG threshold; lower = more strokes", minimum=1, maximum=255),),
)
def scribble_xdog(image: np.ndarray, threshold: int) -> np.ndarray:
    x = image.astype(np.float32)
    g1 = cv2.GaussianBlur(x, (0, 0), 0.5)
    g2 = cv2.GaussianBlur(x, (0, 0), 5.0)
    dog = (255 - np.min(g2 - g1, axis=2)).clip(0, 255).astype(np.uint8)
    out = np.zeros_like(dog)
    out[2 * (255 - dog) > threshold] = 255
    return gray3(out)


def soft_edges(image: np.ndarray) -> np.ndarray:
    """Multi-scale gradient magnitude in [0, 1]: a weight-free stand-in for HED/PiDiNet.

    Scale-normalised Sobel magnitude of the blurred image at sigma 1, 2 and 4, averaged and divided
    by its 99th percentile. Soft and several pixels wide like HED, but NOT HED: checkpoints trained
    on HED maps see a shifted distribution (use `softedge_hed` with the real weights when you can).
    """
    x = image.astype(np.float32) / 255.0
    total = np.zeros(image.shape[:2], np.float32)
    for sigma in (1.0, 2.0, 4.0):
        blurred = cv2.GaussianBlur(x, (0, 0), sigma)
        gx = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3)
        total += np.sqrt(gx * gx + gy * gy).max(axis=2) * sigma
    total /= 3.0
    scale = max(float(np.percentile(total, 99)), 0.25)  # floor: flat images stay black, noise is not blown up
    return (total / scale).clip(0.0, 1.0)


def safe_step(x: np.ndarray, step: int = 2) -> np.ndarray:
    """Quantise a [0, 1] soft edge into a few levels (the 1.1 "safe" variants)."""
    y = x.astype(np.float32) * float(step + 1)
    return y.astype(np.int32).astype(np.float32) / float(step)


def nms(x: np.ndarray, threshold: int, sigma: float) -> np.ndarray:
    """Directional non-maximum suppression then threshold (ControlNet 1.1 `annotator.util.nms`)."""
    x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    kernels = [
        np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]], np.uint8),
        np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]], np.uint8),
        np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.uint8),
        np.array([[0, 0, 1], [0, 1, 0], [1, 0, 0]], np.uint8),
    ]
    y = np.zeros_like(x)
    for kernel in kernels:
        np.putmask(y, cv2.dilate(x, kernel=kernel) == x, x)
    out = np.zeros_like(y, dtype=np.uint8)
    out[y > threshold] = 255
    return out


def soft_edge_to_scribble(edge: np.ndarray) -> np.ndarray:
    """The 1.1 "fake scribble" post-process: thin, blur, binarise (applied to HED/PiDiNet maps)."""
    x = nms(edge, 127, 3.0)
    x = cv2.GaussianBlur(x, (0, 0), 3.0)
    x[x > 4] = 255
    x[x < 255] = 0
    return x


def to_uint8(edge01: np.ndarray) -> np.ndarray:
    return (edge01 * 255.0).clip(0, 255).astype(np.uint8)


@register(
    "softedge",
    feeds="softedge / hed (control_sd15_hed, control_v11p_sd15_softedge) - approximate, see summary",
    summary="classical multi-scale gradient soft edge; an approximation of HED, white on black",
    kind="image",
    params=(Param("safe", False, "quantise into 3 levels like the 1.1 *_safe preprocessors"),),
)
def softedge(image: np.ndarray, safe: bool) -> np.ndarray:
    edge = soft_edges(image)
    return gray3(to_uint8(safe_step(edge) if safe else edge))


@register(
    "scribble_softedge",
    feeds="scribble (control_v11p_sd15_scribble)",
    summary="the classical soft edge through the 1.1 fake-scribble post-process (nms, blur, threshold)",
    kind="binary",
)
def scribble_softedge(image: np.ndarray) -> np.ndarray:
    return gray3(soft_edge_to_scribble(to_uint8(soft_edges(image))))
