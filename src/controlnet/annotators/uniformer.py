"""UniFormer UperNet ADE20K labels (A1111 `seg_ufade20k`) from the published `upernet_global_small.pth`.

As sd-webui-controlnet runs it (annotator/uniformer, its mmseg copy, config upernet_global_small.py):
the detect image edge-padded to a multiple of 64, fitted in 2048×512 keeping its ratio (mmcv's
rescale: cv2 bilinear on the uint8 pixels), normalised with ImageNet's mean and std in mmseg's 0..255
units after mmseg's `to_rgb` channel swap; A1111 hands mmseg RGB pixels, so the swap gives the network
BGR, and so does this. The 1/4-size logits are resized bilinearly to the network input, then to the
padded detect size, soft-maxed and arg-maxed (mmseg's whole-image inference), cropped back, and drawn
in the ADE20K palette (mmseg's show_result at opacity 1, in RGB).
"""

from __future__ import annotations

import numpy as np

from .image import network_size, pad_to_multiple
from .local_models import device_of, load_converted_network

WEIGHTS = "upernet_global_small.pth"
WHAT = f"UniFormer UperNet ({WEIGHTS})"
MEAN = (123.675, 116.28, 103.53)  # mmseg's ADE20K img_norm_cfg, in 0..255
STD = (58.395, 57.12, 57.375)
UPERNET_SIZE = (512, 2048)  # (short, longest): mmseg's ADE20K test scale (2048, 512), keeping the ratio


def _convert(state: dict, what: str, path: str):
    from .uniformer_network import build_uniformer

    return build_uniformer(state, what, path)


def network_input(image: np.ndarray):
    """(the 1×3×h×w float tensor mmseg's test pipeline makes of the image, the padded size)."""
    import cv2
    import torch

    padded, _ = pad_to_multiple(image, 64)
    h, w = network_size(*padded.shape[:2], *UPERNET_SIZE)
    if (h, w) != padded.shape[:2]:
        padded_size = padded.shape[:2]
        resized = cv2.resize(padded, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        padded_size, resized = padded.shape[:2], padded
    pixels = resized[:, :, ::-1].astype(np.float32)  # mmseg's to_rgb swap of what it takes for BGR
    pixels = (pixels - np.float32(MEAN)) * (1.0 / np.float64(STD)).astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))[None], padded_size


def uniformer_logits(image: np.ndarray, weights):
    """(the decode head's class logits, 1×150×h/4×w/4 for the network input, that input's size, the padded size)."""
    import torch

    net = load_converted_network(weights, WEIGHTS, WHAT, _convert)
    x, padded_size = network_input(image)
    with torch.inference_mode():
        return net(x.to(device_of(net))), tuple(x.shape[-2:]), padded_size


def uniformer_labels(image: np.ndarray, weights) -> np.ndarray:
    """H×W ADE20K class ids: the logits resized as mmseg's inference does (to the network input, then to the
    padded detect size), soft-maxed, arg-maxed, cropped to the image."""
    import torch
    import torch.nn.functional as F

    logits, net_size, padded_size = uniformer_logits(image, weights)
    with torch.inference_mode():
        logits = F.interpolate(logits, size=net_size, mode="bilinear", align_corners=False)
        if net_size != padded_size:
            logits = F.interpolate(logits, size=padded_size, mode="bilinear", align_corners=False)
        labels = logits.softmax(dim=1).argmax(dim=1)[0]
    h, w = image.shape[:2]
    return labels[:h, :w].cpu().numpy()
