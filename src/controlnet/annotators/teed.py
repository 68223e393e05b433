"""TEED soft edges (A1111 `softedge_teed`) from the published `7_model.pth`, given as a local file.

As sd-webui-controlnet and controlnet_aux run it: the image edge-padded to a multiple of 64, fed
as RGB in 0..255 (no normalising), the mean of the four output logits (three sides and the fused
map) through a sigmoid, then quantised into `safe_steps` + 1 levels (A1111's slider, default 2;
0 keeps the soft map).
"""

from __future__ import annotations

import numpy as np

from .edges import safe_step, to_uint8
from .image import gray3, pad_to_multiple
from .local_models import device_of, load_network
from .registry import Param, register

WEIGHTS = "7_model.pth"


def _build():
    from .teed_network import TEED

    return TEED()


def teed_raw(image: np.ndarray, weights, default_name: str = WEIGHTS) -> np.ndarray:
    """The mean of TEED's four output logits at the image size (float32, before the sigmoid);
    `default_name`: the published file (7_model.pth, or Anyline's MTEED.pth: same network)."""
    import torch

    net = load_network(weights, default_name, f"TEED ({default_name})", _build)
    padded, (h, w) = pad_to_multiple(image, 64)
    with torch.inference_mode():
        x = torch.from_numpy(padded.copy()).to(device_of(net)).float().permute(2, 0, 1)[None]
        logits = torch.cat(net(x), dim=1)[0].float().cpu().numpy()
    return np.mean(np.moveaxis(logits, 0, 2), axis=2)[:h, :w]


@register(
    "softedge_teed",
    feeds="softedge (control_v11p_sd15_softedge), also hed and SDXL softedge/lineart checkpoints",
    summary="TEED soft edges from a local 7_model.pth, quantised like the *_safe variants; white on black",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(
        Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True),
        Param("safe_steps", 2, "quantise into this many steps + 1 levels (A1111 slider; 0 = soft)", minimum=0, maximum=10),
    ),
    aliases=("teed",),
    weights=(WEIGHTS,),
)
def softedge_teed(image: np.ndarray, model: str, safe_steps: int) -> np.ndarray:
    edge = 1.0 / (1.0 + np.exp(-teed_raw(image, model).astype(np.float64)))
    return gray3(to_uint8(safe_step(edge, safe_steps) if safe_steps else edge))
