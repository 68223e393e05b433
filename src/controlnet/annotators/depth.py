"""Depth maps (and 1.0 normals) from a local transformers depth model: DPT/MiDaS, Depth Anything, Zoe.

Convention of the depth checkpoints: relative inverse depth, min-max normalised to 0..255, white =
near, grey in three channels. Relative models (DPT, Depth Anything) already predict "larger =
nearer"; metric ones (ZoeDepth, GLPN, Depth Pro, Depth Anything metric) are flipped.
"""

from __future__ import annotations

import numpy as np

from .image import gray3
from .local_models import load_transformers_model
from .normal import normal_from_depth_values
from .registry import Param, register

EXAMPLE = "Intel/dpt-hybrid-midas (the MiDaS of ControlNet 1.0) or depth-anything/Depth-Anything-V2-Small-hf"
METRIC_MODEL_TYPES = {"zoedepth", "glpn", "depth_pro"}
MODEL_PARAM = Param("model", None, "local transformers depth-estimation folder", type="path", required=True)


def predict_depth(image: np.ndarray, folder) -> np.ndarray:
    """Float H×W prediction at the image size, oriented so that larger = nearer."""
    import torch

    model, processor = load_transformers_model(folder, "AutoModelForDepthEstimation", "depth-estimation", EXAMPLE)
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    h, w = image.shape[:2]
    if hasattr(processor, "post_process_depth_estimation"):
        depth = processor.post_process_depth_estimation(outputs, target_sizes=[(h, w)])[0]["predicted_depth"]
    else:
        depth = torch.nn.functional.interpolate(outputs.predicted_depth[:, None], size=(h, w), mode="bicubic")[0, 0]
    depth = depth.float().cpu().numpy()
    config = model.config
    if config.model_type in METRIC_MODEL_TYPES or getattr(config, "depth_estimation_type", "") == "metric":
        depth = -depth
    return depth


@register(
    "depth",
    feeds="depth (control_sd15_depth, control_v11f1p_sd15_depth, diffusers *-depth, SDXL depth)",
    summary="transformers depth model from a local folder; min-max normalised, white = near",
    kind="image",
    learned=True,
    needs="a local transformers depth folder (--param model=DIR)",
    params=(MODEL_PARAM,),
)
def depth(image: np.ndarray, model: str) -> np.ndarray:
    d = predict_depth(image, model)
    span = float(d.max() - d.min())
    d = (d - d.min()) / span if span > 0 else np.zeros_like(d)
    return gray3((d * 255.0).clip(0, 255).astype(np.uint8))


@register(
    "normal_midas",
    feeds="normal 1.0 (control_sd15_normal)",
    summary="1.0 normal formula on a local depth model's raw prediction (the original used DPT-hybrid MiDaS)",
    kind="image",
    learned=True,
    needs="a local transformers depth folder (--param model=DIR)",
    params=(
        MODEL_PARAM,
        Param("bg_threshold", 0.4, "normalised depth below this is background: flat normal", minimum=0.0, maximum=1.0),
    ),
)
def normal_midas(image: np.ndarray, model: str, bg_threshold: float) -> np.ndarray:
    return normal_from_depth_values(predict_depth(image, model), bg_threshold)
