"""MiDaS DPT-Hybrid depth (A1111 `depth_midas`) and the 1.0 normal map (`normal_midas`) from the original
`dpt_hybrid-midas-501f0c75.pt`, run as transformers' DPT (midas_network.py maps the file onto it).

As sd-webui-controlnet runs it: the image (short side = the detect resolution) edge-padded to a multiple of
64, fed as RGB / 127.5 - 1 at that size (no 384-px resize), the prediction (larger = nearer) min-max
normalised to grey over the padded map, then cropped back; the normal map is the 1.0 formula on the raw
prediction. controlnet_aux's MidasDetector does the same on an image resized to multiples of 64 instead
of padded: both agree wherever the size is a multiple of 64. normal_midas also still takes a transformers
depth folder (`depth` annotator's model), as before.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .depth import predict_depth, relative_depth_to_gray
from .image import gray3, pad_to_multiple
from .local_models import device_of, load_converted_network
from .normal import normal_from_depth_values
from .registry import Param, register

WEIGHTS = "dpt_hybrid-midas-501f0c75.pt"
WHAT = f"MiDaS DPT-Hybrid ({WEIGHTS})"
MODEL_HELP = f"path to {WEIGHTS} (or the folder holding it)"


def _convert(state: dict, what: str, path: str):
    from .midas_network import build_dpt_hybrid

    model, renamed = build_dpt_hybrid(state, what, path)
    embeddings = model.dpt.embeddings  # MiDaS runs at any multiple of 32, resizing its position embeddings
    embeddings.forward = functools.partial(type(embeddings).forward, embeddings, interpolate_pos_encoding=True)
    return model, renamed


def midas_padded(image: np.ndarray, weights) -> tuple[np.ndarray, tuple[int, int]]:
    """MiDaS's raw prediction on the image edge-padded to a multiple of 64 (float32), and the crop size."""
    import torch

    from .midas_network import hybrid_depth

    net = load_converted_network(weights, WEIGHTS, WHAT, _convert)
    padded, size = pad_to_multiple(image, 64)
    x = torch.from_numpy(padded.copy()).to(device_of(net)).float() / 127.5 - 1.0
    with torch.inference_mode():
        depth = hybrid_depth(net, x.permute(2, 0, 1)[None])[0]
    return depth.float().cpu().numpy(), size


@register(
    "depth_midas",
    feeds="depth (control_sd15_depth, control_v11f1p_sd15_depth, diffusers *-depth, SDXL depth)",
    summary=f"MiDaS DPT-Hybrid from a local {WEIGHTS}, as A1111 and controlnet_aux; white = near",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(Param("model", None, MODEL_HELP, type="path", required=True),),
    weights=(WEIGHTS,),
)
def depth_midas(image: np.ndarray, model: str) -> np.ndarray:
    depth, (h, w) = midas_padded(image, model)
    return gray3(relative_depth_to_gray(depth)[:h, :w])


def _is_transformers_folder(model) -> bool:
    return Path(model).expanduser().is_dir() and (Path(model).expanduser() / "config.json").is_file()


@register(
    "normal_midas",
    feeds="normal 1.0 (control_sd15_normal)",
    summary=f"1.0 normal formula on MiDaS's raw depth ({WEIGHTS}, or a local transformers depth folder)",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} or a transformers depth folder (--param model=PATH)",
    params=(
        Param("model", None, f"{MODEL_HELP}, or a local transformers depth-estimation folder", type="path",
              required=True),
        Param("bg_threshold", 0.4, "normalised depth below this is background: flat normal", minimum=0.0, maximum=1.0),
    ),
    weights=(WEIGHTS,),
)
def normal_midas(image: np.ndarray, model: str, bg_threshold: float) -> np.ndarray:
    if _is_transformers_folder(model):
        return normal_from_depth_values(predict_depth(image, model), bg_threshold)
    depth, (h, w) = midas_padded(image, model)
    return np.ascontiguousarray(normal_from_depth_values(depth, bg_threshold)[:h, :w])
