"""NormalBAE surface normals (A1111 `normal_bae`, ControlNet 1.1's normalbae) from the published
`scannet.pt`, given as a local file.

As sd-webui-controlnet and controlnet_aux run it: the image (short side = the detect resolution)
edge-padded to a multiple of 64 as A1111 (controlnet_aux resizes to multiples of 64 instead: the
same wherever the size is one), RGB / 255 normalised with ImageNet's mean and std, the network's
full-resolution unit normal (x, y, z) mapped to colour as (n + 1) / 2 · 255, truncated to uint8,
channels in that order (R = x, G = y, B = z); the uncertainty channel κ is not drawn.
"""

from __future__ import annotations

import numpy as np

from .image import pad_to_multiple
from .local_models import build_uninitialised, device_of, load_network
from .registry import Param, register

WEIGHTS = "scannet.pt"
WHAT = f"NormalBAE ({WEIGHTS})"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _build():
    from .normal_bae_network import NormalBae

    return build_uninitialised(NormalBae)  # 72.6 M values, every one loaded strictly from the file


def normal_bae_raw(image: np.ndarray, weights) -> np.ndarray:
    """The unit normals (3×H×W float32) NormalBAE predicts for the image, edge-padded to 64 and cropped back."""
    import torch

    net = load_network(weights, WEIGHTS, WHAT, _build)
    padded, (h, w) = pad_to_multiple(image, 64)
    mean = torch.tensor(IMAGENET_MEAN, device=device_of(net)).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device_of(net)).view(3, 1, 1)
    with torch.inference_mode():
        x = torch.from_numpy(padded.copy()).to(mean.device).float().div(255.0).permute(2, 0, 1)
        normals = net(((x - mean) / std)[None])[0, :3]
    return normals.float().cpu().numpy()[:, :h, :w]


def normals_to_colour(normals: np.ndarray) -> np.ndarray:
    """3×H×W unit normals -> H×W×3 uint8: (n + 1) / 2 clipped to 0..1, times 255, truncated (the reference's rounding)."""
    colour = ((normals + 1.0) * 0.5).clip(0.0, 1.0) * 255.0
    return np.ascontiguousarray(np.moveaxis(colour.clip(0, 255).astype(np.uint8), 0, 2))


@register(
    "normal_bae",
    feeds="normalbae (control_v11p_sd15_normalbae, diffusers *-normal 1.1)",
    summary=f"NormalBAE surface normals from a local {WEIGHTS}, as A1111 and controlnet_aux; R = x, G = y, B = z",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True),),
    aliases=("normalbae",),
    weights=(WEIGHTS,),
)
def normal_bae(image: np.ndarray, model: str) -> np.ndarray:
    return normals_to_colour(normal_bae_raw(image, model))
