"""Learned line art (control_v11p_sd15_lineart) from the published sk_model.pth / sk_model2.pth.

The network draws dark lines on white; the checkpoint reads white lines on black, so the map is
inverted (the 1.1 demo feeds `1 - map/255`; controlnet_aux returns `255 - map` as we do).
"""

from __future__ import annotations

import numpy as np

from .image import gray3, pad_to_multiple
from .local_models import device_of, load_network
from .registry import Param, register


def _build():
    from .lineart_network import LineartGenerator

    return LineartGenerator(3, 1, 3)


def _lineart(image: np.ndarray, weights, default_name: str) -> np.ndarray:
    import torch

    net = load_network(weights, default_name, f"lineart ({default_name})", _build)
    padded, (h, w) = pad_to_multiple(image, 64)  # as A1111: edge-pad to 64, crop back
    with torch.inference_mode():
        x = torch.from_numpy(padded.copy()).to(device_of(net)).float().permute(2, 0, 1)[None] / 255.0
        line = net(x)[0, 0].float().cpu().numpy()[:h, :w]
    return gray3(255 - (line * 255.0).clip(0, 255).astype(np.uint8))


@register(
    "lineart_realistic",
    feeds="lineart (control_v11p_sd15_lineart)",
    summary="informative-drawings network from a local sk_model.pth; white lines on black",
    kind="image",
    learned=True,
    needs="sk_model.pth (--param model=FILE)",
    params=(Param("model", None, "path to sk_model.pth (or the folder holding it)", type="path", required=True),),
    aliases=("lineart",),
    weights=("sk_model.pth",),
)
def lineart_realistic(image: np.ndarray, model: str) -> np.ndarray:
    return _lineart(image, model, "sk_model.pth")


@register(
    "lineart_coarse",
    feeds="lineart (control_v11p_sd15_lineart)",
    summary="the coarse variant from a local sk_model2.pth; white lines on black",
    kind="image",
    learned=True,
    needs="sk_model2.pth (--param model=FILE)",
    params=(Param("model", None, "path to sk_model2.pth (or the folder holding it)", type="path", required=True),),
    weights=("sk_model2.pth",),
)
def lineart_coarse(image: np.ndarray, model: str) -> np.ndarray:
    return _lineart(image, model, "sk_model2.pth")
