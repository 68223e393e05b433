"""Semantic segmentation in the ADE20K palette from a local transformers model (UperNet, SegFormer...).

The seg checkpoints read label colours only (no overlay on the photo), ADE20K's 150-class palette
in RGB; maps are resized with nearest so no in-between colour appears.
"""

from __future__ import annotations

import numpy as np

from controlnet.errors import InputError

from .ade20k import ADE20K_PALETTE
from .local_models import load_transformers_model
from .registry import Param, register

EXAMPLE = "openmmlab/upernet-convnext-small or nvidia/segformer-b0-finetuned-ade-512-512 (ADE20K, 150 classes)"


def predict_labels(image: np.ndarray, folder) -> np.ndarray:
    """H×W int class ids at the image size (logits upsampled bilinearly, then argmax)."""
    import torch

    model, processor = load_transformers_model(folder, "AutoModelForSemanticSegmentation", "semantic-segmentation", EXAMPLE)
    if model.config.num_labels != len(ADE20K_PALETTE):
        raise InputError(
            f"the segmentation model in {folder} has {model.config.num_labels} classes; the seg checkpoints "
            f"expect the 150 ADE20K classes, e.g. {EXAMPLE}"
        )
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits
    h, w = image.shape[:2]
    logits = torch.nn.functional.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0].cpu().numpy()


@register(
    "seg_ade20k",
    feeds="seg (control_sd15_seg, control_v11p_sd15_seg, diffusers *-seg)",
    summary="ADE20K labels from a local transformers segmentation model, drawn in the 150-colour palette",
    kind="label",
    learned=True,
    needs="a local transformers ADE20K segmentation folder (--param model=DIR)",
    params=(Param("model", None, "local transformers semantic-segmentation folder (150 ADE20K classes)", type="path", required=True),),
    aliases=("segmentation", "seg"),
    weights=("seg_ade20k",),
)
def seg_ade20k(image: np.ndarray, model: str) -> np.ndarray:
    return ADE20K_PALETTE[predict_labels(image, model)]
