"""The ControlNet++ evaluation protocol's controllability scores (Li et al. 2024, arXiv 2404.07987;
its `eval/eval.py`, `eval_edge.py`, `eval_depth.py`, mmseg for mIoU), each computed as there:

- canny F1 (in %): kornia's canny (low 0.1, high 0.2, on the picture scaled to [0, 1]) of the
  generated picture against the binary condition, pixel-exact binary F1 (torchmetrics
  `BinaryF1Score`: 0 when nothing is predicted or expected);
- HED / lineart "SSIM": multi-scale SSIM (torchmetrics `MultiScaleStructuralSimilarityIndexMeasure`,
  data range 1, 5 scales, 11-px Gaussian window) of the re-detected grey map against the condition;
- depth RMSE: the re-detected relative depth divided by its maximum, quantised to 0..255 as
  `to_pil_image` does (truncation), against the condition min-max scaled to 0..255 (truncated), per picture;
- segmentation mIoU (in %): mmseg's dataset-level figure: per class, intersections and unions summed
  over all pictures, then the mean over classes that occur.
"""

from __future__ import annotations

import numpy as np

from controlnet.metrics.edges import to_gray01

CANNY_LOW, CANNY_HIGH = 0.1, 0.2
MS_SSIM_MIN_SIDE = 161  # 5 scales of an 11-px window: the smallest scale must still hold the window


def kornia_canny(rgb) -> np.ndarray:
    """H×W bool: kornia.filters.canny(picture / 255, 0.1, 0.2) edges, as the protocol draws both maps."""
    import torch
    from kornia.filters import canny

    x = torch.from_numpy(np.ascontiguousarray(np.asarray(rgb)[..., :3])).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        return canny(x, CANNY_LOW, CANNY_HIGH)[1][0, 0].numpy() > 0.5


def binary_f1(pred, target) -> float:
    """Pixel-exact F1 in % of two boolean maps; 0 when there is no true positive (torchmetrics' zero_division)."""
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape:
        raise ValueError(f"edge maps differ in size: {p.shape} vs {t.shape}")
    hit = np.logical_and(p, t).sum()
    return float(200.0 * hit / (p.sum() + t.sum())) if hit else 0.0


def canny_f1(generated_rgb, condition) -> float:
    """The protocol's canny F1 (%): kornia canny of the generated picture against the condition's white pixels."""
    return binary_f1(kornia_canny(generated_rgb), to_gray01(condition) > 0.5)


def ms_ssim(pred_map, condition) -> float:
    """Multi-scale SSIM of two grey maps (uint8 or [0, 1]), data range 1, as torchmetrics computes it."""
    import torch
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    p, t = to_gray01(pred_map), to_gray01(condition)
    if p.shape != t.shape:
        raise ValueError(f"maps differ in size: {p.shape} vs {t.shape}")
    if min(p.shape) < MS_SSIM_MIN_SIDE:
        raise ValueError(f"multi-scale SSIM needs pictures of at least {MS_SSIM_MIN_SIDE} px, got {p.shape}")
    as_tensor = [torch.from_numpy(a).float()[None, None] for a in (p, t)]
    return float(multiscale_structural_similarity_index_measure(*as_tensor, data_range=1.0))


def depth_to_protocol_gray(depth) -> np.ndarray:
    """A relative depth prediction (larger = nearer) as the protocol saves it: depth / max, ×255, truncated."""
    d = np.asarray(depth, np.float64)
    top = d.max()
    return (np.clip(d / top, 0.0, 1.0) * 255.0).astype(np.uint8) if top > 0 else np.zeros(d.shape, np.uint8)


def condition_to_protocol_gray(condition) -> np.ndarray:
    """The depth condition as the protocol's label: min-max scaled to 0..255, truncated to uint8."""
    c = to_gray01(condition)
    span = c.max() - c.min()
    return ((c - c.min()) / span * 255.0).astype(np.uint8) if span > 0 else np.zeros(c.shape, np.uint8)


def depth_rmse(pred_gray, label_gray) -> float:
    """sqrt(mean((pred - label)²)) of two uint8 grey maps, on the 0..255 scale."""
    p, t = np.asarray(pred_gray, np.float64), np.asarray(label_gray, np.float64)
    if p.shape != t.shape:
        raise ValueError(f"depth maps differ in size: {p.shape} vs {t.shape}")
    return float(np.sqrt(np.mean((p - t) ** 2)))


def intersect_union(pred_labels, target_labels, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """(2, num_classes) pixel counts of one picture: per class |P ∩ T| and |P ∪ T| (mmseg's area counts)."""
    p, t = np.asarray(pred_labels).ravel(), np.asarray(target_labels).ravel()
    keep = t != ignore_index
    p, t = p[keep].astype(np.int64), t[keep].astype(np.int64)
    inter = np.bincount(t[p == t], minlength=num_classes)[:num_classes]
    area_p = np.bincount(p[(p >= 0) & (p < num_classes)], minlength=num_classes)[:num_classes]
    area_t = np.bincount(t[(t >= 0) & (t < num_classes)], minlength=num_classes)[:num_classes]
    return np.stack([inter, area_p + area_t - inter])


def dataset_miou(counts) -> float:
    """mIoU in % over pictures: (N, 2, C) counts summed over N, IoU per class, mean over classes with a union."""
    total = np.asarray(counts, np.float64).reshape(-1, 2, np.shape(counts)[-1]).sum(0)
    present = total[1] > 0
    return float(100.0 * (total[0][present] / total[1][present]).mean()) if present.any() else float("nan")
