"""Straight-line map for the M-LSD checkpoints: the M-LSD network given `mlsd_large_512_fp32.pth`.

Without weights, OpenCV's line segment detector stands in. Both draw white 1-px `cv2.line`
segments on black. The thresholds are A1111's sliders: `value_threshold` a segment score in [0, 1]
(the network's centre score; the stand-in's mean grey contrast across the segment / 255) and
`distance_threshold` a minimum length in pixels of M-LSD's half-size output grid.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .image import gray3
from .local_models import device_of, load_network
from .registry import Param, register

WEIGHTS = "mlsd_large_512_fp32.pth"
TINY = "mlsd_tiny_512_fp32.pth"
TOP_K = 200  # centre candidates, as M-LSD decodes


def _build_large():
    from .mlsd_network import MLSDLarge

    return MLSDLarge()


def _build_tiny():
    from .mlsd_network import MLSDTiny

    return MLSDTiny()


def mlsd_raw(image: np.ndarray, weights) -> np.ndarray:
    """The network's 9 maps at half the image size: RGB and a channel of ones, all mapped by v / 127.5 - 1."""
    import torch

    if Path(weights).name.startswith("mlsd_tiny"):  # the tiny file is chosen by its published name
        net = load_network(weights, TINY, f"M-LSD tiny ({TINY})", _build_tiny, fold_batch_norms=True)
    else:
        net = load_network(weights, WEIGHTS, f"M-LSD large ({WEIGHTS})", _build_large, fold_batch_norms=True)
    x = np.concatenate([image.astype(np.float32), np.ones((*image.shape[:2], 1), np.float32)], axis=2)
    # NHWC memory seen as NCHW, batch stride included: PyTorch then keeps the whole network channels-last,
    # as the reference's input does, which is ~20% faster for this depthwise trunk on a CPU.
    x = torch.from_numpy(x / 127.5 - 1.0)[None].permute(0, 3, 1, 2)
    with torch.inference_mode():
        return net(x.to(device_of(net)))[0].float().cpu().numpy()


def network_segments(maps: np.ndarray, value_threshold: float, distance_threshold: float) -> np.ndarray:
    """(N, 4) segments x1, y1, x2, y2 on the image grid: the top centres (3×3 peaks) that pass both thresholds."""
    import torch

    heat = torch.sigmoid(torch.from_numpy(maps[0]))[None]
    peaks = heat * (torch.nn.functional.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    scores, indices = torch.topk(peaks.reshape(-1), TOP_K)
    width = maps.shape[2]
    ys, xs = (indices // width).numpy(), (indices % width).numpy()
    shifts = maps[1:5, ys, xs].T  # (K, 4): start dx, dy, end dx, dy
    length = np.hypot(shifts[:, 0] - shifts[:, 2], shifts[:, 1] - shifts[:, 3])
    keep = (scores.numpy() > value_threshold) & (length > distance_threshold)
    centres = np.stack([xs, ys, xs, ys], axis=1)[keep]
    return 2 * (centres + shifts[keep])


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
    summary="straight segments from the M-LSD network (model=FILE), else OpenCV LSD; white 1-px lines on black",
    kind="edge",
    params=(
        Param("model", None, f"path to {WEIGHTS} or {TINY} (or a folder holding the first); without it OpenCV LSD stands in",
              type="path"),
        Param("value_threshold", 0.1, "minimum segment score (contrast across the line, 0..1)", minimum=0.0, maximum=1.0),
        Param("distance_threshold", 0.1, "minimum length in pixels of a 256-px grid (as M-LSD)", minimum=0.0, maximum=256.0),
        Param("max_lines", 200, "keep at most this many segments, best (score × length) first", minimum=1),
    ),
    weights=(WEIGHTS,),  # found in the models folder: the network runs instead of OpenCV LSD
)
def mlsd(image: np.ndarray, model, value_threshold: float, distance_threshold: float, max_lines: int) -> np.ndarray:
    if model is not None:
        return draw_segments(network_segments(mlsd_raw(image, model), value_threshold, distance_threshold),
                             image.shape[:2])
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    segments = detect_segments(grey)
    h, w = grey.shape
    length = np.hypot(segments[:, 2] - segments[:, 0], segments[:, 3] - segments[:, 1])
    score = segment_contrast(grey, segments)
    keep = (score > value_threshold) & (length > distance_threshold * min(h, w) / 256.0)
    order = np.argsort(-(score * length)[keep], kind="stable")[:max_lines]
    return draw_segments(np.round(segments[keep][order]), (h, w))


def draw_segments(segments: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """White 1-px lines on black; coordinates truncated to int as the reference does."""
    canvas = np.zeros(size, np.uint8)
    for x1, y1, x2, y2 in segments:
        cv2.line(canvas, (int(x1), int(y1)), (int(x2), int(y2)), 255, 1)
    return gray3(canvas)
