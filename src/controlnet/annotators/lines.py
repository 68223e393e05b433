"""Straight-line map for the M-LSD checkpoints, from OpenCV's line segment detector (no weights).

The published `mlsd` annotator is a network (M-LSD). Its output convention is easy to match: white
1-px `cv2.line` segments on black, resized with nearest. Its two thresholds keep their meaning:
`value_threshold` is a segment score in [0, 1] (here the mean grey contrast across the segment /
255) and `distance_threshold` a minimum length in pixels of M-LSD's 256-px output grid.
"""

from __future__ import annotations

import cv2
import numpy as np

from .image import gray3
from .registry import Param, register


def detect_segments(grey: np.ndarray) -> np.ndarray:
    """(N, 4) float32 segments x1, y1, x2, y2 from `cv2.createLineSegmentDetector`."""
    lines = cv2.createLineSegmentDetector(cv2.LSD_REFINE_STD).detect(grey)[0]
    return np.zeros((0, 4), np.float32) if lines is None else lines.reshape(-1, 4)


def segment_contrast(grey: np.ndarray, segments: np.ndarray, offset: float = 2.0, samples: int = 16) -> np.ndarray:
    """Mean |I(p + offset·n) - I(p - offset·n)| / 255 along each segment (n = unit normal)."""
    if len(segments) == 0:
        return np.zeros(0, np.float32)
    p1, p2 = segments[:, None, :2], segments[:, None, 2:]
    t = np.linspace(0.0, 1.0, samples, dtype=np.float32)[None, :, None]
    points = p1 + (p2 - p1) * t  # (N, S, 2)
    direction = (p2 - p1) / np.maximum(np.linalg.norm(p2 - p1, axis=2, keepdims=True), 1e-6)
    normal = np.concatenate([-direction[..., 1:], direction[..., :1]], axis=2) * offset
    image = grey.astype(np.float32)

    def sample(pts):
        return cv2.remap(image, pts[..., 0], pts[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    return np.abs(sample(points + normal) - sample(points - normal)).mean(axis=1) / 255.0


@register(
    "mlsd",
    feeds="mlsd (control_sd15_mlsd, control_v11p_sd15_mlsd)",
    summary="straight segments from OpenCV LSD, filtered like M-LSD; white 1-px lines on black",
    kind="edge",
    params=(
        Param("value_threshold", 0.1, "minimum segment score (contrast across the line, 0..1)", minimum=0.0, maximum=1.0),
        Param("distance_threshold", 0.1, "minimum length in pixels of a 256-px grid (as M-LSD)", minimum=0.0, maximum=256.0),
        Param("max_lines", 200, "keep at most this many segments, best (score × length) first", minimum=1),
    ),
)
def mlsd(image: np.ndarray, value_threshold: float, distance_threshold: float, max_lines: int) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    segments = detect_segments(grey)
    h, w = grey.shape
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    score = segment_contrast(grey, segments)
    keep = (score > value_threshold) & (length > distance_threshold * min(h, w) / 256.0)
    order = np.argsort(-(score * length)[keep], kind="stable")[:max_lines]
    canvas = np.zeros((h, w), np.uint8)
    for x1, y1, x2, y2 in np.round(segments[keep][order]).astype(int):
        cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), 255, 1)
    return gray3(canvas)
