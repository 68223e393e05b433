"""The locked base model: tokenizer, text encoder, VAE, U-Net and noise scheduler of a local diffusers folder.

Only local folders are read (we never download). Besides loading, this module builds random base
models offline, tiny for tests and SD1.5-shaped for benchmarks, with a byte-level CLIP tokenizer
(`controlnet.offline_tokenizer`) that needs no vocabulary download (reference/diffusers_controlnet.md §8.2).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from controlnet.errors import InputError, MissingFileError
from controlnet.tiny import BASE_SHAPES, SD_NOISE_SCHEDULE, clip_text_config


@dataclass
class Base:
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler: object  # a diffusers noise scheduler (DDPM for training)
    path: str = ""

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def lock(self) -> Base:
        """requires_grad_(False) and eval() on every part: the paper's locked model."""
        for m in (self.text_encoder, self.vae, self.unet):
            m.requires_grad_(False)
            m.eval()
        return self

    def to(self, device, dtype: torch.dtype | None = None) -> Base:
        for m in (self.text_encoder, self.vae, self.unet):
            m.to(device=device, dtype=dtype)
        return self


def load_base(path: str | Path) -> Base:
    """Read a diffusers Stable Diffusion folder (model_index.json + tokenizer/, text_encoder/, vae/, unet/,
    scheduler/), or the built-in model named "mini"."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel

    from controlnet.assets import resolve_model

    root = resolve_model(str(path))  # "mini": the built-in miniature model, as `generate --model mini`
    if not (root / "model_index.json").is_file():
        raise MissingFileError(
            f"{root} is not a diffusers model folder (no model_index.json): pass a local folder saved with "
            "`pipeline.save_pretrained(...)`, or 'mini' for the built-in model; models are never downloaded"
        )
    for sub in ("tokenizer", "text_encoder", "vae", "unet", "scheduler"):
        if not (root / sub).is_dir():
            raise MissingFileError(f"{root} has no {sub}/ folder: the base model must be a full Stable Diffusion folder")
    index = json.loads((root / "model_index.json").read_text())
    text_cls = CLIPTextModel
    if index.get("text_encoder", [None, None])[1] not in (None, "CLIPTextModel"):
        import transformers

        text_cls = getattr(transformers, index["text_encoder"][1])
    return Base(
        tokenizer=AutoTokenizer.from_pretrained(root / "tokenizer", local_files_only=True),
        text_encoder=text_cls.from_pretrained(root / "text_encoder", local_files_only=True),
        vae=AutoencoderKL.from_pretrained(root / "vae", local_files_only=True),
        unet=UNet2DConditionModel.from_pretrained(root / "unet", local_files_only=True),
        scheduler=DDPMScheduler.from_pretrained(root / "scheduler", local_files_only=True),
        path=str(root),
    )


def model_hash(*modules: torch.nn.Module) -> str:
    """A content hash of weights (names, dtypes, values): a changed model invalidates cached features."""
    h = hashlib.blake2b(digest_size=16)
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- random base models, offline


# the shapes live with the other random test models: controlnet.tiny
SHAPES = BASE_SHAPES


def build_base(shape: str = "tiny", seed: int = 0, tokenizer_dir: str | Path | None = None,
               prediction_type: str = "epsilon") -> Base:
    """A base model with random weights in the shape of `SHAPES[shape]` (in memory)."""
    import tempfile

    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel

    from controlnet.offline_tokenizer import offline_clip_tokenizer

    if shape not in SHAPES:
        raise InputError(f"unknown base shape {shape!r}; choose one of {', '.join(SHAPES)}")
    spec = SHAPES[shape]
    torch.manual_seed(seed)
    tokenizer = offline_clip_tokenizer(tokenizer_dir or tempfile.mkdtemp(prefix="tok-"), spec["max_length"])
    text_encoder = CLIPTextModel(clip_text_config(len(tokenizer), spec["max_length"], **spec["text"]))
    return Base(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=AutoencoderKL(**spec["vae"]),
        unet=UNet2DConditionModel(**spec["unet"]),
        scheduler=DDPMScheduler(**SD_NOISE_SCHEDULE, prediction_type=prediction_type, clip_sample=False),
    )


def save_base(base: Base, path: str | Path) -> Path:
    """Write a base model as a diffusers folder that `load_base` (and diffusers) read."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer", "text_encoder", "vae", "unet", "scheduler"):
        getattr(base, name).save_pretrained(root / name)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    return root


def make_tiny_base(path: str | Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """A tiny random Stable Diffusion folder for tests (well under a megabyte of weights)."""
    root = Path(path)
    base = build_base("tiny", seed=seed, tokenizer_dir=root / "tokenizer", prediction_type=prediction_type)
    return save_base(base, root)
