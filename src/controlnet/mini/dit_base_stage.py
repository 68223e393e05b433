"""Stage 1 of the mini-dit recipe: a Flux-shaped transformer learns, by rectified flow, to draw the
world's latents from the frozen miniature CLIP's token states and pooled vector.

The world pictures go through the miniature SD's autoencoder once (posterior mean and std, as the
U-Net recipe caches them) and the captions through its text encoder once, so a step runs only the
transformer: x_σ = (1 − σ)·x + σ·ε with logit-normal σ, target ε − x, 10% empty captions so true
classifier-free guidance works, EMA weights kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from controlnet.mini.base_stage import encode_latents
from controlnet.mini.checkpoint import atomic_save, load
from controlnet.mini.dit_config import MiniDiTConfig
from controlnet.mini.loop import Stage
from controlnet.pipeline.flux import image_ids, pack


@torch.no_grad()
def encode_texts(text_encoder, ids: torch.Tensor, path: Path, empty_ids: torch.Tensor, batch: int = 256) -> dict:
    """The frozen text encoder's token states and pooled vector for every distinct caption (cached at
    `path`), `index` mapping each sample to its caption, and the empty caption's at the end."""
    if path.exists():
        return load(path)
    unique, index = torch.unique(torch.cat([ids, empty_ids[None]]), dim=0, return_inverse=True)
    states, pooled = [], []
    for start in range(0, len(unique), batch):
        out = text_encoder(unique[start:start + batch].long())
        states.append(out.last_hidden_state.half())
        pooled.append(out.pooler_output.half())
    cache = {"states": torch.cat(states), "pooled": torch.cat(pooled), "index": index[:-1], "empty": int(index[-1])}
    atomic_save(cache, path)
    return cache


def caches(config: MiniDiTConfig, vae, text_encoder, tokenizer, folder: Path, progress: bool = True) -> tuple[dict, dict]:
    """(latents, text states) of world samples 0..N-1, each encoded once."""
    latents = encode_latents(config, vae, tokenizer, folder / "latents.pt", progress=progress)
    empty = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids[0]
    texts = encode_texts(text_encoder, latents["ids"].long(), folder / "texts.pt", empty)
    return latents, texts


def base_stage(config: MiniDiTConfig, transformer, latents: dict, texts: dict, scaling_factor: float, folder: Path,
               budget_s: float, on_checkpoint=None) -> Stage:
    mean, std = latents["mean"].float(), latents["std"].float()
    states, pooled, index = texts["states"].float(), texts["pooled"].float(), texts["index"]
    batch, side = config.base.batch_size, mean.shape[-1]
    img_ids = image_ids(side, side, torch.float32, "cpu")
    txt_ids = torch.zeros(states.shape[1], 3)

    def step(i: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(config.world_seed * 1_000_003 + i)
        idx = torch.randint(0, len(mean), (batch,), generator=gen)
        x = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scaling_factor
        text = index[idx].clone()
        text[torch.rand(batch, generator=gen) < config.empty_caption_rate] = texts["empty"]
        noise = torch.randn(x.shape, generator=gen)
        sigma = torch.sigmoid(torch.randn(batch, generator=gen))
        s = sigma.view(-1, 1, 1, 1)
        noisy = (1 - s) * x + s * noise
        pred = transformer(pack(noisy), states[text], pooled[text], sigma, img_ids, txt_ids).sample
        return {"loss": F.mse_loss(pred, pack(noise - x))}

    return Stage("base", folder, {"transformer": transformer}, step, config.base.lr, config.base.max_steps, budget_s,
                 config.base.warmup_steps, ema_decay=config.ema_decay, on_checkpoint=on_checkpoint)


def held_out_rows(config: MiniDiTConfig, n: int = 8) -> list:
    """Held-out single-shape world samples (seed + 1): the captions the sample grids show."""
    from controlnet.world import World

    return list(World(config.world_seed + 1, config.image_size, min_shapes=1, max_shapes=1, conditions=()).take(n))


def to_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
