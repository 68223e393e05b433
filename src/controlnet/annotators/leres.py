"""LeReS depth (A1111 `depth_leres`) and LeReS++ (`depth_leres++`: BoostingMonocularDepth's merge of
low- and high-resolution estimates and of local patches) from the published `res101.pth` and
`latest_net_G.pth`, kept in one folder (as lllyasviel/Annotators and A1111's downloads/leres/ hold them).

As controlnet_aux's LeresDetector runs it: the network sees the picture in BGR order, as float 0..255
normalised with ImageNet's mean and std (the reference's ToTensor does not divide float input by 255);
its depth (larger = farther) is min-max scaled to 16 bits, truncated, brought to 8 bits with OpenCV's
rounding; "remove near %" (threshold_a) zeroes what is below that share of 255, the map is inverted
(white = near), and "remove background %" (threshold_b) zeroes what is then below its share. The
picture is edge-padded to a multiple of 64 as A1111 pads (controlnet_aux resizes to multiples of 64
instead: the same wherever the size is one), the map cropped back.
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from .image import gray3, pad_to_multiple
from .local_models import device_of, load_converted_network
from .registry import Param, register

WEIGHTS, MERGE = "res101.pth", "latest_net_G.pth"
WHAT, MERGE_WHAT = f"LeReS depth ({WEIGHTS})", f"LeReS++ merge network ({MERGE})"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FEEDS = "depth (control_v11f1p_sd15_depth, control_sd15_depth, SDXL depth)"


def _convert(state: dict, what: str, path: str):
    from .leres_network import build_leres

    return build_leres(state, what, path)


def _convert_merge(state: dict, what: str, path: str):
    from .leres_merge_network import build_merge

    return build_merge(state, what, path)


def load_leres(model):
    return load_converted_network(model, WEIGHTS, WHAT, _convert)


def load_merge(model):
    """The merge network from the folder of `model` (res101.pth's folder, or that folder itself)."""
    path = Path(model).expanduser()
    return load_converted_network(path if path.is_dir() else path.parent, MERGE, MERGE_WHAT, _convert_merge)


def leres_depth(net, image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The network's depth (float32, the image's size) for the RGB image resized (bilinear) to width x height,
    which must be multiples of 32; resized back bicubic, as the reference's `estimateleres`."""
    import torch

    bgr = cv2.resize(np.ascontiguousarray(image[:, :, ::-1]), (width, height))
    mean = torch.tensor(IMAGENET_MEAN, device=device_of(net)).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device_of(net)).view(3, 1, 1)
    with torch.inference_mode():
        x = (torch.from_numpy(bgr.astype(np.float32)).to(mean.device).permute(2, 0, 1) - mean) / std
        depth = net(x[None].contiguous())[0, 0].float().cpu().numpy()  # CHW as the reference's ToTensor: not channels-last
    return cv2.resize(depth, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_CUBIC)


def depth_to_gray(depth: np.ndarray, remove_near: float = 0.0, remove_background: float = 0.0) -> np.ndarray:
    """The reference's map: 16-bit min-max scale (truncated), 8 bits, thresholds in % of 255, inverted."""
    low, high = depth.min(), depth.max()
    if high - low > np.finfo(float).eps:
        scaled = 65535 * (depth - low) / (high - low)
    else:
        scaled = np.zeros(depth.shape)
    gray = cv2.convertScaleAbs(scaled.astype(np.uint16), alpha=255.0 / 65535.0)
    if remove_near != 0:
        gray = cv2.threshold(gray, remove_near / 100 * 255, 255, cv2.THRESH_TOZERO)[1]
    gray = cv2.bitwise_not(gray)
    if remove_background != 0:
        gray = cv2.threshold(gray, remove_background / 100 * 255, 255, cv2.THRESH_TOZERO)[1]
    return gray


def leres_map(image: np.ndarray, model, remove_near: float, remove_background: float, boost: bool) -> np.ndarray:
    """The depth map of either module, on the image edge-padded to 64 and cropped back."""
    padded, (h, w) = pad_to_multiple(image, 64)
    net = load_leres(model)
    if boost:
        from .leres_boost import boosted_depth

        depth = boosted_depth(padded, functools.partial(leres_depth, net), load_merge(model))
    else:
        depth = leres_depth(net, padded, padded.shape[1], padded.shape[0])
    return gray3(depth_to_gray(depth, remove_near, remove_background)[:h, :w])


PARAMS = (
    Param("remove_near", 0.0, "remove near %: before inverting, depth below this share of 255 becomes 0 (A1111 "
                              "threshold_a)", minimum=0.0, maximum=100.0),
    Param("remove_background", 0.0, "remove background %: after inverting, what is below this share of 255 becomes "
                                    "black (A1111 threshold_b)", minimum=0.0, maximum=100.0),
)


@register(
    "depth_leres",
    feeds=FEEDS,
    summary=f"LeReS depth from a local {WEIGHTS}, as A1111 and controlnet_aux; white = near",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True), *PARAMS),
    weights=(WEIGHTS,),
)
def depth_leres(image: np.ndarray, model: str, remove_near: float, remove_background: float) -> np.ndarray:
    return leres_map(image, model, remove_near, remove_background, boost=False)


@register(
    "depth_leres++",
    feeds=FEEDS,
    summary=f"LeReS++: LeReS boosted by BoostingMonocularDepth's merge network ({WEIGHTS} + {MERGE} in one "
            "folder), as A1111 and controlnet_aux; white = near",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} + {MERGE} (--param model=FOLDER)",
    params=(Param("model", None, f"folder holding {WEIGHTS} and {MERGE} (or the path of {WEIGHTS})", type="path",
                  required=True), *PARAMS),
    weights=(WEIGHTS, MERGE),
)
def depth_leres_boost(image: np.ndarray, model: str, remove_near: float, remove_background: float) -> np.ndarray:
    return leres_map(image, model, remove_near, remove_background, boost=True)
