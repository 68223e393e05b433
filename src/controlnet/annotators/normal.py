"""Normal map from a depth map, ControlNet 1.0 style (control_sd15_normal).

The 1.0 "normal" annotator was not a network: Sobel of the MiDaS depth, z fixed to 2π, flat where
the normalised depth is below a background threshold, then packed as n·127.5 + 127.5. The 1.0
checkpoint reads the channels reversed, R = z, G = y, B = x (its demo feeds `map[:, :, ::-1]`);
A1111 and controlnet_aux bake the flip into the map, and so do we.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .registry import Param, register


def normal_from_depth_values(depth: np.ndarray, bg_threshold: float, z: float = 2 * math.pi) -> np.ndarray:
    """Float depth (larger = nearer, any scale) -> H×W×3 uint8 normal map in (z, y, x) channel order."""
    depth = depth.astype(np.float32)
    span = float(depth.max() - depth.min())
    normalised = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    x = cv2.Sobel(depth, cv2.CV_32F, 1, 0, ksize=3)
    y = cv2.Sobel(depth, cv2.CV_32F, 0, 1, ksize=3)
    background = normalised < bg_threshold
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, np.full_like(x, z)], axis=2)
    normal /= np.sqrt(np.sum(normal**2, axis=2, keepdims=True))
    packed = (normal * 127.5 + 127.5).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(packed[:, :, ::-1])


@register(
    "normal_from_depth",
    feeds="normal 1.0 (control_sd15_normal); not normalbae (1.1 uses a learned normal network)",
    summary="1.0 formula on a given depth map (grey, white = near): Sobel x/y, z = 2π, channels (z, y, x)",
    kind="image",
    params=(
        Param("bg_threshold", 0.4, "normalised depth below this is background: flat normal", minimum=0.0, maximum=1.0),
        Param("z", 2 * math.pi, "z component before normalising; the depth is read in grey levels 0..255", minimum=1e-3),
    ),
)
def normal_from_depth(image: np.ndarray, bg_threshold: float, z: float) -> np.ndarray:
    depth = image.astype(np.float32).mean(axis=2)
    return normal_from_depth_values(depth, bg_threshold, z)

