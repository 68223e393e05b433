"""The miniature model as a diffusers StableDiffusionPipeline: assemble, save (fp16), load offline."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import logging as diffusers_logging

from controlnet.errors import MissingFileError
from controlnet.mini.models import build_sample_scheduler


def assemble(vae, text_encoder, tokenizer, unet, scheduler=None) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler or build_sample_scheduler(), safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False,
    )


def save(pipe: StableDiffusionPipeline, folder: str | Path, fp16: bool = True) -> Path:
    """diffusers folder layout (model_index.json, vae/, unet/, text_encoder/, tokenizer/, scheduler/)."""
    folder = Path(folder)
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()  # no "modules to keep in float32: []" notice for the cast
    try:
        if fp16:  # half the bytes; copies, so the caller's float32 models stay trainable
            parts = {k: copy.deepcopy(getattr(pipe, k)).to(torch.float16) for k in ("vae", "text_encoder", "unet")}
            pipe = assemble(parts["vae"], parts["text_encoder"], pipe.tokenizer, parts["unet"], pipe.scheduler)
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        diffusers_logging.set_verbosity(verbosity)
    return folder


def load(folder: str | Path, dtype: torch.dtype = torch.float32) -> StableDiffusionPipeline:
    """Load offline; fp16 weights are upcast, since CPUs compute in float32."""
    folder = Path(folder)
    if not (folder / "model_index.json").exists():
        raise MissingFileError(f"{folder} is not a diffusers model folder (no model_index.json); "
                               f"build one with `controlnet world build-mini {folder.parent}`")
    with warnings.catch_warnings():  # newer diffusers call it `dtype`; `torch_dtype` works on all we support
        warnings.simplefilter("ignore", FutureWarning)
        return StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype, safety_checker=None,
                                                       requires_safety_checker=False, local_files_only=True)
