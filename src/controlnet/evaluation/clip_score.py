"""CLIP text-image score from a local CLIP folder (transformers' `CLIPModel` layout).

Score = 100 · max(cos(image embedding, text embedding), 0), as `torchmetrics`' CLIPScore and the
paper's Table 3 use it. Without a folder nothing is computed and the reports say so: no model is
ever downloaded.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from controlnet import checks
from controlnet.errors import MissingFileError

NOT_COMPUTED = "not computed: give --clip PATH (a local CLIP folder)"


def load_clip(path: str | os.PathLike):
    """(model, processor) from a local folder; a clear error if it is not one."""
    folder = checks.path("--clip", path)
    if not (folder / "config.json").is_file():
        raise MissingFileError(f"--clip {folder}: not a CLIP folder (no config.json); give a local "
                               "transformers CLIPModel folder (config.json, weights, tokenizer files)")
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise MissingFileError(f"--clip {folder}: cannot load a CLIP model and processor ({exc})") from None
    return model, processor


@torch.no_grad()
def clip_scores(images, prompts: list[str], clip) -> np.ndarray:
    """One score per (picture, prompt) pair; an empty prompt scores NaN (nothing to agree with)."""
    model, processor = clip
    out = np.full(len(images), np.nan)
    keep = [i for i, p in enumerate(prompts) if p]
    for b in range(0, len(keep), 16):
        idx = keep[b:b + 16]
        batch = processor(text=[prompts[i] for i in idx], images=[images[i] for i in idx], return_tensors="pt",
                          padding=True, truncation=True)
        img = model.get_image_features(pixel_values=batch["pixel_values"])
        txt = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        img, txt = _tensor(img), _tensor(txt)
        cos = torch.nn.functional.cosine_similarity(img, txt, dim=-1)
        out[idx] = (100 * cos.clamp(min=0)).numpy()
    return out


def _tensor(x) -> torch.Tensor:
    """transformers 5 may return an output object where 4.x returned the embedding tensor."""
    return x if isinstance(x, torch.Tensor) else getattr(x, "pooler_output", x[0])
