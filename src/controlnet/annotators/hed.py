"""HED soft edges and HED scribbles from the published `ControlNetHED.pth`, given as a local file.

Same network and post-processing as ControlNet 1.1: mean of the five side outputs (each resized to
the image with INTER_LINEAR) through a sigmoid; `safe` quantises it, `scribble_hed` thins and
binarises it. The image is edge-padded to a multiple of 64 first, as the A1111 extension does.
"""

from __future__ import annotations

import cv2
import numpy as np

from .edges import safe_step, soft_edge_to_scribble, to_uint8
from .image import gray3, pad_to_multiple
from .local_models import device_of, load_network
from .registry import Param, register

WEIGHTS = "ControlNetHED.pth"
MODEL_PARAM = Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True)


def _build():
    from .hed_network import ControlNetHED

    return ControlNetHED()


def hed_edges(image: np.ndarray, weights) -> np.ndarray:
    """Soft edge probability in [0, 1] at the image size."""
    import torch

    net = load_network(weights, WEIGHTS, "HED (ControlNetHED.pth)", _build)
    padded, (h, w) = pad_to_multiple(image, 64)
    with torch.inference_mode():
        x = torch.from_numpy(padded.copy()).float().permute(2, 0, 1)[None].to(device_of(net))
        sides = [s[0, 0].float().cpu().numpy() for s in net(x)]
    ph, pw = padded.shape[:2]
    sides = np.stack([cv2.resize(s, (pw, ph), interpolation=cv2.INTER_LINEAR) for s in sides], axis=2)
    edge = 1.0 / (1.0 + np.exp(-sides.mean(axis=2).astype(np.float64)))
    return edge[:h, :w]


@register(
    "softedge_hed",
    feeds="softedge / hed (control_sd15_hed, control_v11p_sd15_softedge)",
    summary="the published HED network from a local ControlNetHED.pth; soft white edges on black",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(MODEL_PARAM, Param("safe", False, "quantise into 3 levels (softedge_hedsafe)")),
    aliases=("hed",),
    weights=(WEIGHTS,),
)
def softedge_hed(image: np.ndarray, model: str, safe: bool) -> np.ndarray:
    edge = hed_edges(image, model)
    return gray3(to_uint8(safe_step(edge) if safe else edge))


@register(
    "scribble_hed",
    feeds="scribble (control_sd15_scribble, control_v11p_sd15_scribble)",
    summary="HED edges through the fake-scribble post-process (nms, blur, threshold)",
    kind="binary",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(MODEL_PARAM,),
    weights=(WEIGHTS,),
)
def scribble_hed(image: np.ndarray, model: str) -> np.ndarray:
    return gray3(soft_edge_to_scribble(to_uint8(hed_edges(image, model))))
