"""Control fidelity: re-extract the condition from a generated image and compare it with the input.

This is how ControlNet's adherence is measured (paper §4.3, ControlNet++): the annotator that made
the training condition is run on the output, and the two maps are compared with the metric that
suits the kind of map. There is ONE definition per metric, here; the trainer's fidelity monitor,
`benchmarks/mini_world.py` and `controlnet evaluate` all call it:

- edge maps (canny, lines, scribble, binary): F1 of edge pixels, reported twice, following
  ControlNet++ (pixel-exact, `edge_f1_exact`) and with a tolerance of `EDGE_TOLERANCE` = 2 px
  (`edge_f1`: a contour moved by one pixel, diagonally included, or drawn on the other side of a
  step as canny does, still counts). The tolerant one is the headline number.
- soft edges / lineart / scribble_hed: SSIM of grey maps;
- depth: RMSE on the 0-255 scale;
- segmentation colour maps: mIoU and pixel accuracy after snapping to the reference palette.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlnet.metrics.depth import depth_rmse
from controlnet.metrics.edges import edge_f1, soft_edge_ssim
from controlnet.metrics.segmentation import color_map_scores

EDGE_LIKE = ("canny", "mlsd", "scribble", "scribble_xdog", "lineart_standard", "binary", "threshold")
SOFT_LIKE = ("softedge", "softedge_hed", "scribble_softedge", "scribble_hed", "lineart_realistic", "lineart_coarse")
EDGE_TOLERANCE = 2.0  # pixels: the stated tolerance of `edge_f1`; `edge_f1_exact` uses none


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool


METRICS = {  # every fidelity metric by name: what the reports say about it
    "edge_f1": Metric("edge_f1", True),
    "edge_f1_exact": Metric("edge_f1_exact", True),
    "ssim": Metric("ssim", True),
    "depth_rmse": Metric("depth_rmse", False),
    "miou": Metric("miou", True),
    "pixel_accuracy": Metric("pixel_accuracy", True),
}


def metric_for(annotator: str) -> Metric:
    """The headline score that suits the maps of `annotator`."""
    if annotator in EDGE_LIKE:
        return METRICS["edge_f1"]
    if annotator in SOFT_LIKE:
        return METRICS["ssim"]
    if annotator == "depth":
        return METRICS["depth_rmse"]
    if annotator.startswith("seg"):
        return METRICS["miou"]
    return METRICS["ssim"]


def fidelity_scores(annotator: str, extracted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Every score of `annotator`'s kind between a re-extracted map and the input condition; the
    headline (`metric_for`) comes first."""
    name = metric_for(annotator).name
    if name == "edge_f1":
        return {"edge_f1": edge_f1(extracted, reference, tolerance=EDGE_TOLERANCE),
                "edge_f1_exact": edge_f1(extracted, reference, tolerance=0)}
    if name == "depth_rmse":
        return {"depth_rmse": depth_rmse(extracted, reference)}
    if name == "miou":
        miou, accuracy = color_map_scores(extracted, reference)
        return {"miou": miou, "pixel_accuracy": accuracy}
    return {"ssim": soft_edge_ssim(extracted, reference)}


def compare_maps(annotator: str, extracted: np.ndarray, reference: np.ndarray) -> float:
    """The headline score of `metric_for(annotator)` between a re-extracted map and the input condition."""
    return fidelity_scores(annotator, extracted, reference)[metric_for(annotator).name]


def reextract(annotator: str, image_rgb: np.ndarray, **params) -> np.ndarray:
    """Run the annotator (its default parameters unless given) on a generated image at its own size."""
    from controlnet.annotators import annotate

    h, w = image_rgb.shape[:2]
    return annotate(annotator, image_rgb, resolution=max(16, min(h, w)), **params)


def control_fidelity(annotator: str, generated_rgb: np.ndarray, condition_rgb: np.ndarray, **params) -> float:
    """Re-extract `annotator`'s map from `generated_rgb` and score it against `condition_rgb` (headline)."""
    return compare_maps(annotator, reextract(annotator, generated_rgb, **params), condition_rgb)


def control_fidelity_scores(annotator: str, generated_rgb: np.ndarray, condition_rgb: np.ndarray,
                            **params) -> dict[str, float]:
    """Like `control_fidelity`, with every score of the kind (`fidelity_scores`)."""
    return fidelity_scores(annotator, reextract(annotator, generated_rgb, **params), condition_rgb)
