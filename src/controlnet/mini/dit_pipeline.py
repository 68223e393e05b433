"""The mini-dit base as a Flux pipeline folder: its own transformer and scheduler, and the miniature
SD's autoencoder, text encoder and tokenizer *referenced* (model_index.json `_shared_components`),
never copied: the CLIP serves as both of Flux's text encoders (token states and pooled vector)."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from controlnet.files import write_text
from controlnet.pipeline.flux import FluxBase

SHARED = ("vae", "text_encoder", "tokenizer")
CLASSES = {"transformer": ["diffusers", "FluxTransformer2DModel"], "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
           "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
           "text_encoder_2": [None, None], "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": [None, None]}


def mini_parts(mini: Path) -> tuple:
    """The miniature SD's (vae, text_encoder, tokenizer), float32, frozen."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(mini, subfolder="vae", torch_dtype=torch.float32, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(mini, subfolder="text_encoder", dtype=torch.float32, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(mini, subfolder="tokenizer", local_files_only=True)
    return vae.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False), tokenizer


def assemble(transformer, vae, text_encoder, tokenizer, scheduler) -> FluxBase:
    return FluxBase(transformer=transformer, vae=vae, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)


def save(transformer, scheduler, folder: Path, mini: Path) -> Path:
    """The folder (fp16 transformer, scheduler, model_index.json pointing at `mini`'s shared parts:
    `builtin:mini/...` for the built-in miniature SD, so the folder loads wherever it is copied, else
    a relative path, so the pair can move together)."""
    from controlnet.assets import BUILTIN_DIR

    folder = Path(folder)
    copy.deepcopy(transformer).to(torch.float16).save_pretrained(folder / "transformer", safe_serialization=True)
    scheduler.save_pretrained(folder / "scheduler")
    mini = Path(mini).resolve()
    if mini.parent == BUILTIN_DIR.resolve():
        rel = f"builtin:{mini.name}"
    else:
        rel = os.path.relpath(mini, folder.resolve())
    index = {"_class_name": "FluxPipeline", "_diffusers_version": "0.42.1", **CLASSES,
             "_shared_components": {k: f"{rel}/{k}" for k in SHARED}}
    write_text(folder / "model_index.json", json.dumps(index, indent=2) + "\n")
    return folder
