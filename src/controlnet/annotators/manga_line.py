"""Manga line (A1111 `lineart_anime_denoise`, its manga_line annotator) from the published `erika.pth`.

As sd-webui-controlnet runs it: the detect-size image edge-padded to a multiple of 64, turned grey
(OpenCV's RGB→GRAY), fed in 0..255 as it is; the output (dark lines on white, about 0..255) is
inverted to white lines on black, clipped to uint8 and cropped back. It suits the lineart_anime
checkpoint and cleans screentone better than `lineart_anime`.
"""

from __future__ import annotations

import cv2
import numpy as np

from .image import gray3, pad_to_multiple
from .local_models import build_uninitialised, device_of, load_network
from .registry import Param, register

WEIGHTS = "erika.pth"


def _build():
    from .manga_line_network import MangaLineNetwork

    return build_uninitialised(MangaLineNetwork)


def manga_line_raw(image: np.ndarray, weights) -> np.ndarray:
    """The network's output (float32, dark lines on white in about 0..255) on the grey image; sides
    must be multiples of 16."""
    import torch

    net = load_network(weights, WEIGHTS, "manga line (erika.pth)", _build)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    with torch.inference_mode():
        return net(torch.from_numpy(grey).to(device_of(net)).float()[None, None])[0, 0].float().cpu().numpy()


@register(
    "lineart_anime_denoise",
    feeds="lineart_anime (control_v11p_sd15s2_lineart_anime), also lineart",
    summary="manga structural lines (screentone removed) from a local erika.pth; white lines on black",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True),),
    aliases=("manga_line",),
    weights=(WEIGHTS,),
)
def lineart_anime_denoise(image: np.ndarray, model: str) -> np.ndarray:
    padded, (h, w) = pad_to_multiple(image, 64)  # as A1111's resize_image_with_pad
    line = 255 - manga_line_raw(padded, model)
    return gray3(line.clip(0, 255).astype(np.uint8)[:h, :w])
