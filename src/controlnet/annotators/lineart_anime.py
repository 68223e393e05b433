"""Anime line art (A1111 `lineart_anime`) from the published `netG.pth` (Anime2Sketch), a local file.

As sd-webui-controlnet runs it: the detect-size image edge-padded to a multiple of 64, then
stretched (INTER_CUBIC) to the next multiples of 256 (the U-Net halves it eight times), fed as
RGB in -1..1; the output (dark lines on white, -1..1) is scaled to 0..255, stretched back
(INTER_CUBIC), clipped to uint8, cropped and inverted to white lines on black. controlnet_aux does
the same on its 64-rounded detect size, so both agree wherever the image needs no padding.
"""

from __future__ import annotations

import cv2
import numpy as np

from .image import gray3, pad_to_multiple
from .local_models import build_uninitialised, device_of, load_network
from .registry import Param, register

WEIGHTS = "netG.pth"


def _build():
    from .lineart_anime_network import AnimeLineartGenerator

    return build_uninitialised(AnimeLineartGenerator)


def network_size(h: int, w: int) -> tuple[int, int]:
    """The (height, width) the network runs at: each side rounded up to a multiple of 256."""
    return -(-h // 256) * 256, -(-w // 256) * 256


def lineart_anime_raw(image: np.ndarray, weights) -> np.ndarray:
    """The network's output (-1..1, float32) on the padded image stretched to `network_size`."""
    import torch

    net = load_network(weights, WEIGHTS, "anime lineart (netG.pth)", _build)
    h, w = network_size(*image.shape[:2])
    stretched = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
    with torch.inference_mode():
        x = torch.from_numpy(stretched).to(device_of(net)).float().div_(127.5).sub_(1.0).permute(2, 0, 1)[None]
        return net(x)[0, 0].float().cpu().numpy()


@register(
    "lineart_anime",
    feeds="lineart_anime (control_v11p_sd15s2_lineart_anime), also lineart",
    summary="Anime2Sketch lines from a local netG.pth; white lines on black",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True),),
    weights=(WEIGHTS,),
)
def lineart_anime(image: np.ndarray, model: str) -> np.ndarray:
    padded, (h, w) = pad_to_multiple(image, 64)  # as A1111's resize_image_with_pad
    line = lineart_anime_raw(padded, model) * 127.5 + 127.5
    line = cv2.resize(line, (padded.shape[1], padded.shape[0]), interpolation=cv2.INTER_CUBIC)
    return gray3(255 - line.clip(0, 255).astype(np.uint8)[:h, :w])
