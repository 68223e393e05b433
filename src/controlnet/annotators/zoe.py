"""ZoeDepth (A1111 / controlnet_aux `depth_zoe`) from the original `ZoeD_M12_N.pt`, run as transformers'
ZoeDepthForDepthEstimation (zoe_network.py maps the file onto it).

As ZoeDepth's own `infer` runs it (controlnet_aux's ZoeDetector, A1111): RGB / 255, reflect-padded by
int(sqrt(side / 2) * 3) pixels on each side, resized (bilinear, corners aligned) to the size nearest the
network's 384x512 that keeps the aspect ratio in multiples of 32, normalised to [-1, 1]; the metric depth
resized back (bicubic), cropped, and averaged with the prediction on the mirrored picture. The map is the
2nd..85th percentile of that distance, near = white (depth.metric_depth_to_gray).
"""

from __future__ import annotations

import math

import numpy as np

from .depth import metric_depth_to_gray
from .image import gray3
from .local_models import device_of, load_converted_network
from .registry import Param, register

WEIGHTS = "ZoeD_M12_N.pt"
WHAT = f"ZoeDepth ({WEIGHTS})"
NET_SIZE = (384, 512)  # (h, w) the Zoe-N config's img_size
MULTIPLE = 32
PAD_FACTOR = 3


def _convert(state: dict, what: str, path: str):
    from .zoe_network import build_zoe

    return build_zoe(state, what, path)


def network_size(height: int, width: int) -> tuple[int, int]:
    """ZoeDepth's "minimal" resize: the scale (of 384/h and 512/w) nearer 1, both sides rounded to 32."""
    scale_h, scale_w = NET_SIZE[0] / height, NET_SIZE[1] / width
    scale = scale_w if abs(1 - scale_w) < abs(1 - scale_h) else scale_h
    return tuple(int(round(side * scale / MULTIPLE) * MULTIPLE) for side in (height, width))


def _padded_prediction(net, x):
    """Metric depth for a (1, 3, h, w) batch in [0, 1], with ZoeDepth's reflect padding and resizes."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    pad_h, pad_w = int(math.sqrt(h / 2) * PAD_FACTOR), int(math.sqrt(w / 2) * PAD_FACTOR)
    padded = F.pad(x, [pad_w, pad_w, pad_h, pad_h], mode="reflect")
    size = network_size(*padded.shape[-2:])
    pixels = F.interpolate(padded, size, mode="bilinear", align_corners=True) * 2.0 - 1.0
    depth = net(pixel_values=pixels).predicted_depth[:, None]
    depth = F.interpolate(depth, padded.shape[-2:], mode="bicubic", align_corners=False)
    return depth[:, :, pad_h:pad_h + h, pad_w:pad_w + w]


def zoe_distance(image: np.ndarray, weights) -> np.ndarray:
    """ZoeDepth's metric prediction (float32 H×W, metres for the published file), flip-averaged."""
    import torch

    net = load_converted_network(weights, WEIGHTS, WHAT, _convert)
    x = torch.from_numpy(image.copy()).to(device_of(net)).float().permute(2, 0, 1)[None] / 255.0
    with torch.inference_mode():
        depth = _padded_prediction(net, x)
        mirrored = _padded_prediction(net, x.flip(3)).flip(3)
    return ((depth + mirrored) / 2)[0, 0].float().cpu().numpy()


@register(
    "depth_zoe",
    feeds="depth (control_v11f1p_sd15_depth, SDXL depth)",
    summary=f"ZoeDepth-N from a local {WEIGHTS}, as A1111 and controlnet_aux; 2nd-85th percentile, white = near",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (--param model=FILE)",
    params=(Param("model", None, f"path to {WEIGHTS} (or the folder holding it)", type="path", required=True),),
    weights=(WEIGHTS,),
)
def depth_zoe(image: np.ndarray, model: str) -> np.ndarray:
    return gray3(metric_depth_to_gray(zoe_distance(image, model)))
