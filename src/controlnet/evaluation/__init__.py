"""Control-fidelity metrics: does a generated image follow its condition? Pure numpy/scikit-image."""

from controlnet.evaluation.depth import depth_order_error, depth_rmse
from controlnet.evaluation.edges import edge_f1, edge_precision_recall, soft_edge_ssim, to_edges
from controlnet.evaluation.fidelity import Metric, compare_maps, control_fidelity, metric_for, reextract
from controlnet.evaluation.segmentation import (
    color_map_miou,
    colors_to_labels,
    confusion_matrix,
    mean_iou,
    palette_of,
    pixel_accuracy,
)

__all__ = [
    "Metric",
    "color_map_miou",
    "colors_to_labels",
    "compare_maps",
    "confusion_matrix",
    "control_fidelity",
    "depth_order_error",
    "depth_rmse",
    "edge_f1",
    "edge_precision_recall",
    "mean_iou",
    "metric_for",
    "palette_of",
    "pixel_accuracy",
    "reextract",
    "soft_edge_ssim",
    "to_edges",
]
