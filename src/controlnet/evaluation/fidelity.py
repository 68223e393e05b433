"""Control fidelity: re-extract the condition from a generated image and compare it with the input.

This is how ControlNet's adherence is measured (paper §4.3, ControlNet++): the annotator that made
the training condition is run on the output, and the two maps are compared with the metric that
suits the kind of map. Training logs it so users see "sudden convergence" as a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlnet.evaluation.depth import depth_rmse
from controlnet.evaluation.edges import edge_f1, soft_edge_ssim
from controlnet.evaluation.segmentation import color_map_miou

EDGE_LIKE = ("canny", "mlsd", "scribble", "scribble_xdog", "lineart_standard", "binary", "threshold")
SOFT_LIKE = ("softedge", "softedge_hed", "scribble_softedge", "scribble_hed", "lineart_realistic", "lineart_coarse")


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool


def metric_for(annotator: str) -> Metric:
    """Which score suits the maps of `annotator`."""
    if annotator in EDGE_LIKE:
        return Metric("edge_f1", True)
    if annotator in SOFT_LIKE:
        return Metric("ssim", True)
    if annotator == "depth":
        return Metric("depth_rmse", False)
    if annotator.startswith("seg"):
        return Metric("miou", True)
    return Metric("ssim", True)


def compare_maps(annotator: str, extracted: np.ndarray, reference: np.ndarray, tolerance: float = 2.0) -> float:
    """The score of `metric_for(annotator)` between a re-extracted map and the input condition."""
    name = metric_for(annotator).name
    if name == "edge_f1":
        return edge_f1(extracted, reference, tolerance=tolerance)
    if name == "depth_rmse":
        return depth_rmse(extracted, reference)
    if name == "miou":
        return color_map_miou(extracted, reference)
    return soft_edge_ssim(extracted, reference)


def reextract(annotator: str, image_rgb: np.ndarray, **params) -> np.ndarray:
    """Run the annotator on a generated image (H×W×3 uint8) at its own size."""
    from controlnet.annotators import annotate

    h, w = image_rgb.shape[:2]
    return annotate(annotator, image_rgb, resolution=max(16, min(h, w)), **params)


def control_fidelity(annotator: str, generated_rgb: np.ndarray, condition_rgb: np.ndarray, **params) -> float:
    """Re-extract `annotator`'s map from `generated_rgb` and score it against `condition_rgb`."""
    return compare_maps(annotator, reextract(annotator, generated_rgb, **params), condition_rgb)
