"""Condition images in, hint tensors out, for the pipeline.

A hint is what every stack feeds a ControlNet: RGB, float in [0, 1], NCHW, the size of the output
image. Reading, RGB conversion (one alpha rule) and the resize modes live in `controlnet.images`,
shared with the annotators and the trainer; this module only turns their arrays into tensors.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from controlnet.images import (  # noqa: F401 - the pipeline's public names, kept for importers
    NO_RESIZE,
    RESIZE_MODES,
    fit,
    load_image,
    pil_to_array,
    resize_mode,
    to_float,
    to_rgb,
)
from controlnet.images import resize_auto as resize  # noqa: F401


def hint_tensor(image, width: int, height: int, mode: str | None = "crop_and_resize") -> torch.Tensor:
    """A (1, 3, height, width) float32 hint in [0, 1] from any image."""
    x = fit(to_rgb(image), (width, height), resize_mode(mode))
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


def mask_tensor(mask, width: int, height: int) -> torch.Tensor:
    """A (1, 1, height, width) region mask in [0, 1]: 1 where the unit acts. Any image works; its
    mean over RGB is taken (alpha is composited on white, so a transparent area counts as 1)."""
    x = to_rgb(mask).mean(axis=2, keepdims=True)
    if x.shape[:2] != (height, width):
        x = cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA)[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None].float()


def image_size(image) -> tuple[int, int]:
    """(width, height) of an image without converting it more than needed."""
    if hasattr(image, "size") and not isinstance(image, np.ndarray) and not torch.is_tensor(image):
        return tuple(image.size)
    x = to_rgb(image)
    return x.shape[1], x.shape[0]


def to_pil(x: np.ndarray | torch.Tensor):
    """H×W×3 float in [0, 1] (or a 1×3×H×W / 3×H×W tensor) -> 8-bit RGB PIL image."""
    from PIL import Image

    if torch.is_tensor(x):
        t = x.detach().float().cpu()
        t = t[0] if t.ndim == 4 else t
        x = t.permute(1, 2, 0).numpy()
    return Image.fromarray((np.clip(x, 0.0, 1.0) * 255.0).round().astype(np.uint8))
