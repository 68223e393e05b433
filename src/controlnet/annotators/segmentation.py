"""Semantic segmentation drawn in a palette, from a local transformers model.

`seg_ade20k` runs any ADE20K semantic-segmentation folder (UperNet, SegFormer, OneFormer...) at its
processor's own size. A1111's module names run the network at the size their reference does:
- `seg_ofade20k` / `seg_ofcoco`: OneFormer, task "semantic". A1111's detectron2 predictor scales the
  detect image to short side 640, long side at most 2560 (ADE20K Swin-L config), or 800 / 1333 (COCO).
- `seg_ufade20k`: UperNet. A1111's mmseg test pipeline fits the image in 2048×512, keeping its ratio; the
  published `upernet_global_small.pth` (UniFormer backbone) runs as A1111 runs it (annotators/uniformer.py),
  a transformers UperNet folder as any UperNet.
The seg checkpoints read label colours only (no overlay on the photo), in RGB: ADE20K's 150-class
palette, or COCO panoptic's 133 colours for `seg_ofcoco`; maps are resized with nearest so no
in-between colour appears.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from controlnet.errors import InputError

from .ade20k import ADE20K_PALETTE
from .coco_panoptic import COCO_PANOPTIC_PALETTE
from .image import network_size
from .local_models import check_model_folder, find_weight, load_transformers_model
from .registry import Param, register
from .uniformer import UPERNET_SIZE, uniformer_labels
from .uniformer import WEIGHTS as UNIFORMER_FILE

EXAMPLE = "openmmlab/upernet-convnext-small or nvidia/segformer-b0-finetuned-ade-512-512 (ADE20K, 150 classes)"
OF_ADE20K = "shi-labs/oneformer_ade20k_swin_large (transformers' conversion of 250_16_swin_l_oneformer_ade20k_160k.pth)"
OF_COCO = "shi-labs/oneformer_coco_swin_large (transformers' conversion of 150_16_swin_l_oneformer_coco_100ep.pth)"
UPERNET = "openmmlab/upernet-convnext-small"
# (short side, longest side) the references run the network at
ONEFORMER_ADE20K_SIZE = (640, 2560)
ONEFORMER_COCO_SIZE = (800, 1333)
# the models-folder entries that `controlnet evaluate` may score ADE20K with, and their sizes (None: the processor's)
TEST_SIZE = {"seg_ade20k": None, "seg_ofade20k": ONEFORMER_ADE20K_SIZE, "seg_ufade20k": UPERNET_SIZE}


def model_type(folder, example: str = EXAMPLE) -> str:
    """The `model_type` of a transformers folder's config.json ("oneformer", "upernet", ...)."""
    path = check_model_folder(folder, "semantic-segmentation", example)
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{path / 'config.json'} is not a readable JSON config: {exc}") from exc


def load_segmenter(folder, num_classes: int = len(ADE20K_PALETTE), classes: str = "the 150 ADE20K classes",
                   example: str = EXAMPLE, require: str | None = None):
    """(model, processor) of a local segmentation folder with `num_classes` classes; `require`: its model type."""
    kind = model_type(folder, example)
    if require is not None and kind != require:
        raise InputError(f"{folder} holds a {kind or 'untyped'} model, not {require}; give e.g. {example} "
                         f"(seg_ade20k runs any ADE20K segmentation folder)")
    oneformer = kind == "oneformer"
    model, processor = load_transformers_model(
        folder, "AutoModelForUniversalSegmentation" if oneformer else "AutoModelForSemanticSegmentation",
        "semantic-segmentation", example, "OneFormerProcessor" if oneformer else "AutoImageProcessor")
    if model.config.num_labels != num_classes:
        raise InputError(f"the segmentation model in {folder} has {model.config.num_labels} classes; this map "
                         f"needs {classes}, e.g. {example}")
    return model, processor


def network_outputs(image: np.ndarray, folder, size=None, **load):
    """(raw outputs, processor): OneFormer's class and mask logits per query, or a semantic model's class
    logits, on `image` scaled by `size` = (short, longest) (None: the folder processor's own size)."""
    import torch

    model, processor = load_segmenter(folder, **load)
    kwargs = {"task_inputs": ["semantic"]} if model.config.model_type == "oneformer" else {}
    if size is not None:
        height, width = network_size(*image.shape[:2], *size)
        kwargs["size"] = {"height": height, "width": width}
    inputs = processor(images=image, return_tensors="pt", **kwargs).to(model.device)
    with torch.inference_mode():
        return model(**inputs), processor


def predict_labels(image: np.ndarray, folder, size=None, **load) -> np.ndarray:
    """H×W int class ids at the image size. OneFormer: transformers' semantic post-processing (class
    probabilities × mask probabilities summed over queries, resized bilinearly); others: logits
    upsampled bilinearly; then argmax."""
    import torch

    outputs, processor = network_outputs(image, folder, size, **load)
    h, w = image.shape[:2]
    if hasattr(outputs, "class_queries_logits"):
        return processor.post_process_semantic_segmentation(outputs, target_sizes=[(h, w)])[0].cpu().numpy()
    logits = torch.nn.functional.interpolate(outputs.logits.float(), size=(h, w), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)[0].cpu().numpy()


def ade20k_test_labels(image: np.ndarray, entry) -> np.ndarray:
    """ADE20K class ids by a models-folder entry (evaluate's mIoU), run as its module runs it: seg_ofade20k and
    seg_ufade20k at A1111's sizes, upernet_global_small.pth as A1111's mmseg, seg_ade20k at its processor's."""
    if Path(entry).name == UNIFORMER_FILE:
        return ufade20k_labels(image, entry)
    return predict_labels(image, entry, TEST_SIZE.get(Path(entry).name))


def _refuse_checkpoint_file(model, module: str, example: str) -> None:
    """A1111's OneFormer .pth files are detectron2 checkpoints: name the folder to give instead."""
    if Path(model).expanduser().is_file():
        raise InputError(f"{module} reads a transformers folder, not the file {model}; give a local copy of {example}")


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


@register(
    "seg_ofade20k",
    feeds="seg (control_v11p_sd15_seg, control_sd15_seg, diffusers *-seg)",
    summary="OneFormer ADE20K labels (task semantic, short side 640 as A1111), in the 150-colour ADE20K palette",
    kind="label",
    learned=True,
    needs="a local transformers OneFormer ADE20K folder (--param model=DIR)",
    params=(Param("model", None, f"local transformers OneFormer ADE20K folder, e.g. {OF_ADE20K}", type="path", required=True),),
    aliases=("oneformer_ade20k",),
    weights=("seg_ofade20k",),
)
def seg_ofade20k(image: np.ndarray, model: str) -> np.ndarray:
    _refuse_checkpoint_file(model, "seg_ofade20k", OF_ADE20K)
    return ADE20K_PALETTE[predict_labels(image, model, ONEFORMER_ADE20K_SIZE, example=OF_ADE20K, require="oneformer")]


@register(
    "seg_ofcoco",
    feeds="seg (control_v11p_sd15_seg reads COCO panoptic colours too)",
    summary="OneFormer COCO panoptic labels (task semantic, short side 800 as A1111), in COCO's 133-colour palette",
    kind="label",
    learned=True,
    needs="a local transformers OneFormer COCO folder (--param model=DIR)",
    params=(Param("model", None, f"local transformers OneFormer COCO folder, e.g. {OF_COCO}", type="path", required=True),),
    aliases=("oneformer_coco",),
    weights=("seg_ofcoco",),
)
def seg_ofcoco(image: np.ndarray, model: str) -> np.ndarray:
    _refuse_checkpoint_file(model, "seg_ofcoco", OF_COCO)
    labels = predict_labels(image, model, ONEFORMER_COCO_SIZE, num_classes=len(COCO_PANOPTIC_PALETTE),
                            classes="the 133 COCO panoptic classes", example=OF_COCO, require="oneformer")
    return COCO_PANOPTIC_PALETTE[labels]


@register(
    "seg_ufade20k",
    feeds="seg (control_sd15_seg, control_v11p_sd15_seg, diffusers *-seg)",
    summary="UniFormer UperNet ADE20K labels (upernet_global_small.pth, as A1111's mmseg; or a transformers UperNet folder), "
            "in the 150-colour ADE20K palette",
    kind="label",
    learned=True,
    needs="upernet_global_small.pth or a local transformers UperNet ADE20K folder (--param model=FILE|DIR)",
    params=(Param("model", None, f"path to upernet_global_small.pth (or the folder holding it), or a local transformers "
                                 f"UperNet ADE20K folder, e.g. {UPERNET}", type="path", required=True),),
    aliases=("uniformer", "upernet_ade20k"),
    weights=("upernet_global_small.pth",),  # a transformers folder named seg_ufade20k serves instead (local_models.INSTEAD)
)
def seg_ufade20k(image: np.ndarray, model: str) -> np.ndarray:
    return ADE20K_PALETTE[ufade20k_labels(image, model)]


def ufade20k_labels(image: np.ndarray, model) -> np.ndarray:
    """seg_ufade20k's class ids: a transformers folder (config.json) runs at mmseg's size, anything else is
    read as upernet_global_small.pth (a file, or a folder holding it or a transformers folder named seg_ufade20k)."""
    path = Path(model).expanduser()
    if path.is_dir() and not (path / "config.json").exists():
        found = find_weight(UNIFORMER_FILE, path)
        path = found if found is not None else path  # not found: uniformer_labels names the file and where to get it
    if path.is_dir() and (path / "config.json").exists():
        return predict_labels(image, path, UPERNET_SIZE, example=UPERNET, require="upernet")
    return uniformer_labels(image, path)
