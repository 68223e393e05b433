"""Segmentation fidelity: pixel accuracy and mean IoU of label maps, and colour maps → labels.

The paper scores ADE20K control by re-segmenting outputs and reporting IoU (§4.3). Generated images
never hit a palette colour exactly, so colour maps are snapped to the nearest palette colour first.
"""

from __future__ import annotations

import numpy as np


def _check(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.asarray(pred), np.asarray(target)
    if p.shape != t.shape:
        raise ValueError(f"label maps differ in size: {p.shape} vs {t.shape}")
    return p, t


def pixel_accuracy(pred, target, ignore_index: int | None = None) -> float:
    """Fraction of (non-ignored) pixels whose label matches."""
    p, t = _check(pred, target)
    keep = np.ones(t.shape, bool) if ignore_index is None else t != ignore_index
    n = keep.sum()
    return float((p[keep] == t[keep]).sum() / n) if n else 1.0


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    p, t = _check(pred, target)
    keep = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    return np.bincount(num_classes * t[keep].astype(np.int64) + p[keep].astype(np.int64),
                       minlength=num_classes**2).reshape(num_classes, num_classes)


def mean_iou(pred, target, num_classes: int | None = None, ignore_index: int | None = None) -> float:
    """Mean over classes present in prediction or reference of |P ∩ T| / |P ∪ T|."""
    p, t = _check(pred, target)
    if num_classes is None:
        num_classes = int(max(p.max(initial=0), t.max(initial=0))) + 1
    cm = confusion_matrix(p, t, num_classes, ignore_index)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 1.0


def colors_to_labels(rgb, palette) -> np.ndarray:
    """H×W labels: the index of the nearest palette colour (K×3) for every pixel."""
    a = np.asarray(rgb, dtype=np.int32)[..., :3]
    pal = np.asarray(palette, dtype=np.int32).reshape(-1, 3)
    d = ((a[..., None, :] - pal[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


def palette_of(rgb, max_colors: int = 256) -> np.ndarray:
    """The distinct colours of a reference colour map (its palette), most frequent first."""
    flat = np.asarray(rgb)[..., :3].reshape(-1, 3)
    colors, counts = np.unique(flat, axis=0, return_counts=True)
    return colors[np.argsort(-counts)][:max_colors]


def color_map_scores(pred_rgb, target_rgb) -> tuple[float, float]:
    """(mIoU, pixel accuracy) of a colour map against a reference one, both snapped to the reference palette."""
    pal = palette_of(target_rgb)
    pred, target = colors_to_labels(pred_rgb, pal), colors_to_labels(target_rgb, pal)
    return mean_iou(pred, target, len(pal)), pixel_accuracy(pred, target)


def color_map_miou(pred_rgb, target_rgb) -> float:
    """mIoU of a generated colour map against a reference one, both snapped to the reference palette."""
    return color_map_scores(pred_rgb, target_rgb)[0]
