"""Anyline (TheMistoAI's line detector for MistoLine) from the published `MTEED.pth`, a local file.

As controlnet_aux 0.0.10's AnylineDetector: TEED (the `softedge_teed` network, MTEED's weights)
quantised into 3 levels, and `lineart_standard` with a σ=2 blur and threshold 3 whose 4-connected
specks of 12 pixels or fewer are dropped; the lines are laid over the TEED map by the reference's
"screen" blend 1 − (1 − line)(1 − edge), computed as it does in uint8 arithmetic (so it wraps
modulo 256: a line over a full edge comes out 2·line − 1). TEED is edge-padded to 64 as in
`softedge_teed`.
"""

from __future__ import annotations

import cv2
import numpy as np

from .edges import lineart_standard, safe_step, to_uint8
from .image import gray3
from .registry import Param, register
from .teed import teed_raw

WEIGHTS = "MTEED.pth"
# the reference asks scikit-image to remove objects of min_size=36 voxels from its 3-channel mask; since
# scikit-image 0.26 (what controlnet_aux 0.0.10 installs) that removes sizes ≤ 36, so specks of ≤ 12 pixels
SPECK_PIXELS = 12


def drop_specks(lines: np.ndarray, speck_pixels: int = SPECK_PIXELS) -> np.ndarray:
    """Zero the 4-connected groups of nonzero pixels of `speck_pixels` pixels or fewer."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((lines > 0).astype(np.uint8), connectivity=4)
    keep = stats[:, cv2.CC_STAT_AREA] > speck_pixels
    keep[0] = False  # the background
    return np.where(keep[labels], lines, 0).astype(np.uint8)


def screen_uint8(edge: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Where a line is, 1 − (1 − line)(1 − edge) modulo 256 (the reference's uint8 blend); elsewhere the edge."""
    blend = (1 - (1 - line.astype(np.int64)) * (1 - edge.astype(np.int64))) % 256
    return np.where(line > 0, blend, edge).astype(np.uint8)


@register(
    "anyline",
    feeds="MistoLine (TheMistoAI/MistoLine, SDXL), also lineart and softedge checkpoints",
    summary="Anyline: TEED from a local MTEED.pth with dark-line detail laid over it; white on black",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(
        Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True),
        Param("gaussian_sigma", 2.0, "blur sigma of the line detail's background estimate", minimum=0.1),
        Param("intensity_threshold", 3, "only line values above this set the normalising median", minimum=0),
    ),
    weights=(WEIGHTS,),
)
def anyline(image: np.ndarray, model: str, gaussian_sigma: float, intensity_threshold: int) -> np.ndarray:
    edge = 1.0 / (1.0 + np.exp(-teed_raw(image, model, WEIGHTS).astype(np.float64)))
    lines = drop_specks(lineart_standard(image, gaussian_sigma, intensity_threshold)[:, :, 0])
    return gray3(screen_uint8(to_uint8(safe_step(edge, 2)), lines))
