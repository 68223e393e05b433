"""Depth maps from a local transformers depth model: DPT/MiDaS, Depth Anything, Zoe (MiDaS from its .pt: midas.py).

Convention of the depth checkpoints: white = near, grey in three channels. Relative models (DPT,
Depth Anything) already predict "larger = nearer" and are min-max normalised, as the references do.
Metric ones (ZoeDepth, GLPN, Depth Pro, Depth Anything metric) predict distance: like ControlNet 1.1,
A1111 and controlnet_aux for Zoe, the 2nd..85th percentile of distance maps to white..black, clipped.
"""

from __future__ import annotations

import numpy as np

from .image import gray3
from .local_models import load_transformers_model
from .registry import Param, register

EXAMPLE = "Intel/dpt-hybrid-midas (the MiDaS of ControlNet 1.0) or depth-anything/Depth-Anything-V2-Small-hf"
METRIC_MODEL_TYPES = {"zoedepth", "glpn", "depth_pro"}
MODEL_PARAM = Param("model", None, "local transformers depth-estimation folder", type="path", required=True)


def predict_depth(image: np.ndarray, folder) -> np.ndarray:
    """Float H×W prediction at the image size, oriented so that larger = nearer."""
    depth, metric = _raw_prediction(image, folder)
    return -depth if metric else depth


def _raw_prediction(image: np.ndarray, folder) -> tuple[np.ndarray, bool]:
    """Float H×W prediction at the image size as the model gives it, and whether it is metric distance."""
    import torch

    model, processor = load_transformers_model(folder, "AutoModelForDepthEstimation", "depth-estimation", EXAMPLE)
    inputs = processor(images=image, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        outputs = model(**inputs)
    h, w = image.shape[:2]
    if hasattr(processor, "post_process_depth_estimation"):
        depth = processor.post_process_depth_estimation(outputs, target_sizes=[(h, w)])[0]["predicted_depth"]
    else:
        depth = torch.nn.functional.interpolate(outputs.predicted_depth[:, None], size=(h, w), mode="bicubic")[0, 0]
    depth = depth.float().cpu().numpy()
    config = model.config
    return depth, config.model_type in METRIC_MODEL_TYPES or getattr(config, "depth_estimation_type", "") == "metric"


def metric_depth_to_gray(distance: np.ndarray) -> np.ndarray:
    """Zoe post-processing of ControlNet 1.1 / A1111 / controlnet_aux: 2nd..85th percentile, near = white."""
    distance = distance.astype(np.float32)
    vmin = np.percentile(distance, 2)
    vmax = np.percentile(distance, 85)
    if vmax <= vmin:  # flat prediction: the reference divides by zero; give a flat black map
        return np.zeros(distance.shape, np.uint8)
    near = 1.0 - (distance - vmin) / (vmax - vmin)
    return (near * 255.0).clip(0, 255).astype(np.uint8)


def relative_depth_to_gray(depth: np.ndarray) -> np.ndarray:
    """Min-max normalisation of a relative (larger = nearer) prediction, as for MiDaS / Depth Anything."""
    span = float(depth.max() - depth.min())
    depth = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    return (depth * 255.0).clip(0, 255).astype(np.uint8)


@register(
    "depth",
    feeds="depth (control_sd15_depth, control_v11f1p_sd15_depth, diffusers *-depth, SDXL depth)",
    summary="transformers depth model from a local folder; white = near (metric: 2nd-85th percentile)",
    kind="image",
    learned=True,
    needs="a local transformers depth folder (--param model=DIR)",
    params=(MODEL_PARAM,),
    weights=("depth",),
)
def depth(image: np.ndarray, model: str) -> np.ndarray:
    prediction, metric = _raw_prediction(image, model)
    return gray3(metric_depth_to_gray(prediction) if metric else relative_depth_to_gray(prediction))

