"""PiDiNet soft edges and scribbles from the published `table5_pidinet.pth`, given as a local file.

As the A1111 extension and controlnet_aux run it: the image edge-padded to a multiple of 64, fed
to the network in BGR order scaled to 0..1, the fused (last) output taken; `safe` quantises it
into 3 levels (softedge_pidisafe), `scribble_pidinet` thins and binarises it like scribble_hed.
"""

from __future__ import annotations

import numpy as np

from .edges import safe_step, soft_edge_to_scribble, to_uint8
from .image import gray3, pad_to_multiple
from .local_models import device_of, load_network
from .registry import Param, register

WEIGHTS = "table5_pidinet.pth"
MODEL_PARAM = Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True)


def _build():
    from .pidinet_network import PiDiNet

    return PiDiNet()


def pidinet_raw(image: np.ndarray, weights) -> np.ndarray:
    """The fused edge probability in [0, 1] at the image size (float32, before any quantising)."""
    import torch

    net = load_network(weights, WEIGHTS, "PiDiNet (table5_pidinet.pth)", _build)
    padded, (h, w) = pad_to_multiple(image, 64)
    with torch.inference_mode():
        x = torch.from_numpy(padded[:, :, ::-1].copy()).to(device_of(net)).float().permute(2, 0, 1)[None] / 255.0
        edge = net(x)[-1][0, 0].float().cpu().numpy()
    return edge[:h, :w]


@register(
    "softedge_pidinet",
    feeds="softedge (control_v11p_sd15_softedge), also hed checkpoints",
    summary="the published PiDiNet from a local table5_pidinet.pth; soft white edges on black",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(MODEL_PARAM, Param("safe", False, "quantise into 3 levels (softedge_pidisafe)")),
    aliases=("pidinet",),
    weights=(WEIGHTS,),
)
def softedge_pidinet(image: np.ndarray, model: str, safe: bool) -> np.ndarray:
    edge = pidinet_raw(image, model)
    return gray3(to_uint8(safe_step(edge) if safe else edge))


@register(
    "softedge_pidisafe",
    feeds="softedge (control_v11p_sd15_softedge)",
    summary="PiDiNet soft edges quantised into 3 levels (fewer hidden details for the network to copy)",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(MODEL_PARAM,),
    weights=(WEIGHTS,),
)
def softedge_pidisafe(image: np.ndarray, model: str) -> np.ndarray:
    return gray3(to_uint8(safe_step(pidinet_raw(image, model))))


@register(
    "scribble_pidinet",
    feeds="scribble (control_sd15_scribble, control_v11p_sd15_scribble)",
    summary="PiDiNet edges through the fake-scribble post-process (nms, blur, threshold)",
    kind="binary",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(MODEL_PARAM,),
    weights=(WEIGHTS,),
)
def scribble_pidinet(image: np.ndarray, model: str) -> np.ndarray:
    return gray3(soft_edge_to_scribble(to_uint8(pidinet_raw(image, model))))
