"""Depth Anything V2 (`depth_anything_v2`) as comfyui_controlnet_aux and sd-webui-controlnet run it.

Weights: the original `depth_anything_v2_vits.pth` (or vitb / vitl, .pth or .safetensors: a folder given as
`model` is searched for FILES in order), mapped onto
transformers' `DepthAnythingForDepthEstimation` (depth_anything_weights.py), or a local transformers
folder of that class (e.g. Depth-Anything-V2-Small-hf). Only the Small model is Apache-2.0; Base and
Large are CC-BY-NC-4.0 (non-commercial).

The authors' `infer_image`, which both UIs call: RGB / 255 resized with cv2's INTER_CUBIC, keeping the
aspect ratio, so that both sides are at least 518 ("lower_bound"), each side rounded to a multiple of
14 (rounded up where rounding would fall below 518); ImageNet mean and std; the prediction resized back
bilinearly (align_corners=True); min-max to 0..255, truncated. Their DINOv2 interpolates its position
embeddings with a scale factor of (n + 0.1) / 37, transformers' with the size n: the original's rule is
used here, so grids other than 37×37 give the authors' numbers.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np

from controlnet.errors import InputError

from .depth import relative_depth_to_gray
from .image import gray3
from .local_models import (
    check_model_folder,
    detector_device,
    device_of,
    find_weight,
    load_state_dict_file,
    load_strictly,
    resolve_weight_file,
)
from .registry import Param, register

WEIGHTS = "depth_anything_v2_vits.pth"
# looked for in this order in a folder given as `model` (sd-webui-controlnet keeps the vitl safetensors)
FILES = (WEIGHTS, "depth_anything_v2_vitb.pth", "depth_anything_v2_vitl.pth", "depth_anything_v2_vitl.safetensors")
WHAT = "Depth Anything V2"
INPUT_SIZE, MULTIPLE = 518, 14
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LICENCE = "only Small (vits) is Apache-2.0; Base and Large are CC-BY-NC-4.0"


def network_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) the network sees: the authors' Resize(518, keep_aspect_ratio, lower_bound, multiple of 14)."""
    scale = max(INPUT_SIZE / height, INPUT_SIZE / width)

    def side(x: float) -> int:
        rounded = int(np.round(x / MULTIPLE) * MULTIPLE)
        return rounded if rounded >= INPUT_SIZE else int(np.ceil(x / MULTIPLE) * MULTIPLE)

    return side(scale * height), side(scale * width)


def network_input(image: np.ndarray):
    """The 1×3×h×w float32 tensor of the authors' image2tensor (float64 resize and normalising, as they do)."""
    import cv2
    import torch

    h, w = network_size(*image.shape[:2])
    resized = cv2.resize(image / 255.0, (w, h), interpolation=cv2.INTER_CUBIC)
    normalised = (resized - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)).astype(np.float32))[None]


def depth_anything_raw(image: np.ndarray, model) -> np.ndarray:
    """The relative depth (larger = nearer) at the image size, float32, before the min-max."""
    import torch

    net = load_depth_anything(model)
    with torch.inference_mode():
        depth = net(pixel_values=network_input(image).to(device_of(net))).predicted_depth
        depth = torch.nn.functional.interpolate(depth[:, None], image.shape[:2], mode="bilinear", align_corners=True)
    return depth[0, 0].float().cpu().numpy()


def load_depth_anything(model):
    """The network of a transformers folder or an original file; cached per path and modification time."""
    path = Path(model).expanduser() if model is not None else None
    if path is not None and path.is_dir() and (path / "config.json").exists():
        path = check_model_folder(path, WHAT, "depth-anything/Depth-Anything-V2-Small-hf")
        return _load(str(path), (path / "config.json").stat().st_mtime, True, detector_device())
    if path is not None and path.is_dir():  # the first published file found there
        model = next((found for name in FILES if (found := find_weight(name, path)) is not None), model)
    path = resolve_weight_file(model, WEIGHTS, f"{WHAT} ({WEIGHTS}; {LICENCE})")
    return _load(str(path), path.stat().st_mtime, False, detector_device())


@functools.lru_cache(maxsize=2)
def _load(path: str, _mtime: float, folder: bool, device: str):
    from transformers import DepthAnythingForDepthEstimation

    if folder:
        net = _load_folder(path)
    else:
        from .depth_anything_weights import config_from_tensors, to_transformers

        state = load_state_dict_file(path)
        net = load_strictly(DepthAnythingForDepthEstimation(config_from_tensors(state, path)),
                                  to_transformers(state), path, f"{WHAT} ({WEIGHTS})")
    embeddings = net.backbone.embeddings
    embeddings.interpolate_pos_encoding = functools.partial(_original_position_embeddings, embeddings)
    return net.float().to(device).eval()


def _load_folder(path: str):
    """A transformers folder of this class with every tensor present (transformers would fill gaps at random)."""
    import json

    from transformers import DepthAnythingForDepthEstimation

    kind = json.loads((Path(path) / "config.json").read_text()).get("model_type")
    if kind != "depth_anything":
        raise InputError(f"{path} holds a {kind} model, not Depth Anything; give a copy of "
                         f"depth-anything/Depth-Anything-V2-Small-hf or the original {WEIGHTS}")
    net, info = DepthAnythingForDepthEstimation.from_pretrained(path, local_files_only=True, output_loading_info=True)
    gaps = [*info.get("missing_keys", ()), *(str(k[0]) for k in info.get("mismatched_keys", ()))]
    if gaps:
        raise InputError(f"{path} lacks {len(gaps)} of the model's tensors ({', '.join(sorted(gaps)[:3])}); "
                         "it is not a complete Depth Anything folder")
    return net


def _original_position_embeddings(embeddings, tokens, height: int, width: int):
    """DINOv2's own interpolation (scale factor (n + 0.1) / side, bicubic), which transformers replaced by size n."""
    import torch

    table = embeddings.position_embeddings
    count = table.shape[1] - 1
    if tokens.shape[1] - 1 == count and height == width:
        return table
    patch = embeddings.patch_embeddings.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    side = math.sqrt(count)
    grid = table[:, 1:].float().reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
    scale = ((height // patch + 0.1) / side, (width // patch + 0.1) / side)
    grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, table.shape[-1])
    return torch.cat((table[:, :1].float(), grid), dim=1).to(table.dtype)


@register(
    "depth_anything_v2",
    feeds="depth (control_v11f1p_sd15_depth, SDXL / Flux depth, union depth)",
    summary=f"Depth Anything V2 relative depth from the original file or a transformers folder; white = near ({LICENCE})",
    kind="image",
    learned=True,
    needs=f"{WEIGHTS} (or vitb/vitl, or a transformers folder; --param model=PATH)",
    params=(Param("model", None, f"path to {WEIGHTS} (vitb/vitl also work; {LICENCE}), the folder holding it, "
                                 "or a transformers Depth Anything folder", type="path", required=True),),
    weights=(WEIGHTS,),
)
def depth_anything_v2(image: np.ndarray, model: str) -> np.ndarray:
    return gray3(relative_depth_to_gray(depth_anything_raw(image, model)))
