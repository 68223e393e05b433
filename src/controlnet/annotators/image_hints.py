"""Hints that are the photo itself, reduced: colour grid, tile resample, blur, recolour.

tile/ip2p/recolor checkpoints read raw (downsampled, blurred or grey) RGB; T2I color reads a 64×
mosaic. Formulas as in the A1111 extension.
"""

from __future__ import annotations

import cv2
import numpy as np

from .image import gray3
from .registry import Param, register


@register(
    "color",
    feeds="T2I-Adapter color (t2iadapter_color_sd14v1), colour-palette hints",
    summary="colour grid: shrink by `cell_size` with INTER_CUBIC, enlarge back with INTER_NEAREST",
    kind="label",
    params=(Param("cell_size", 64, "side of one colour cell in detect pixels", minimum=1),),
)
def color(image: np.ndarray, cell_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // cell_size), max(1, h // cell_size)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


@register(
    "tile_resample",
    feeds="tile (control_v11f1e_sd15_tile)",
    summary="the image downsampled by `downsample_rate` (INTER_AREA); the model invents the detail back",
    kind="image",
    uses_resolution=False,
    params=(Param("downsample_rate", 1.0, "shrink factor; below 1.1 the image is passed unchanged", minimum=1.0, maximum=64.0),),
)
def tile_resample(image: np.ndarray, downsample_rate: float) -> np.ndarray:
    if downsample_rate < 1.1:
        return image
    h, w = image.shape[:2]
    size = (max(1, int(w / downsample_rate)), max(1, int(h / downsample_rate)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


@register(
    "blur_gaussian",
    feeds="tile (control_v11f1e_sd15_tile), blur checkpoints",
    summary="Gaussian blur of the image (A1111 'blur_gaussian')",
    kind="image",
    params=(Param("sigma", 9.0, "Gaussian sigma in detect pixels", minimum=0.01, maximum=64.0),),
)
def blur_gaussian(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def _gamma(channel: np.ndarray, gamma: float) -> np.ndarray:
    x = (channel.astype(np.float32) / 255.0) ** gamma
    return gray3((x * 255.0).clip(0, 255).astype(np.uint8))


@register(
    "recolor_luminance",
    feeds="recolor (ioclab recolor / sai_xl_recolor): colourise a grey image",
    summary="CIELAB lightness L, gamma-corrected, as grey RGB",
    kind="image",
    params=(Param("gamma_correction", 1.0, "exponent applied to L/255", minimum=0.1, maximum=4.0),),
)
def recolor_luminance(image: np.ndarray, gamma_correction: float) -> np.ndarray:
    # A1111 converts with COLOR_BGR2LAB on RGB data; we use the true RGB lightness.
    return _gamma(cv2.cvtColor(image, cv2.COLOR_RGB2LAB)[:, :, 0], gamma_correction)


@register(
    "recolor_intensity",
    feeds="recolor (ioclab recolor / sai_xl_recolor): colourise a grey image",
    summary="HSV value V = max(R, G, B), gamma-corrected, as grey RGB",
    kind="image",
    params=(Param("gamma_correction", 1.0, "exponent applied to V/255", minimum=0.1, maximum=4.0),),
)
def recolor_intensity(image: np.ndarray, gamma_correction: float) -> np.ndarray:
    return _gamma(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[:, :, 2], gamma_correction)
