"""Evaluating ControlNets: fidelity metrics (does a generated image follow its condition? one
definition each, in `fidelity`), world scores with exact ground truth, FID/KID, CLIP score, and
`evaluate(...)`, the paper's evaluation as one call (`controlnet evaluate`)."""

from controlnet.evaluation.fid import fid, kid
from controlnet.evaluation.run import evaluate
from controlnet.evaluation.settings import EvalSettings
from controlnet.evaluation.stats import mean_ci
from controlnet.metrics.depth import depth_order_error, depth_rmse
from controlnet.metrics.edges import edge_f1, edge_precision_recall, soft_edge_ssim, to_edges
from controlnet.metrics.fidelity import (
    EDGE_TOLERANCE,
    Metric,
    compare_maps,
    control_fidelity,
    control_fidelity_scores,
    fidelity_scores,
    metric_for,
    reextract,
)
from controlnet.metrics.segmentation import (
    color_map_miou,
    color_map_scores,
    colors_to_labels,
    confusion_matrix,
    mean_iou,
    palette_of,
    pixel_accuracy,
)

__all__ = [
    "EDGE_TOLERANCE",
    "EvalSettings",
    "Metric",
    "color_map_miou",
    "color_map_scores",
    "colors_to_labels",
    "compare_maps",
    "confusion_matrix",
    "control_fidelity",
    "control_fidelity_scores",
    "depth_order_error",
    "depth_rmse",
    "edge_f1",
    "edge_precision_recall",
    "evaluate",
    "fid",
    "fidelity_scores",
    "kid",
    "mean_ci",
    "mean_iou",
    "metric_for",
    "palette_of",
    "pixel_accuracy",
    "reextract",
    "soft_edge_ssim",
    "to_edges",
]
