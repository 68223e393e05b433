"""Stage 2 of the mini-dit recipe: the edges ControlNet, XLabs-style (a pixel-space hint encoder),
trained with the flow-matching loss of `controlnet.training.flow_matching` on the cached latents.

Why pixels: a 1-px outline survives an 8×-down VAE latent badly, so the hint goes through the
ControlNet's own conv encoder (as the U-Net mini:edges ControlNet's does), which lands on the latent
grid; its 2×2 patches make tokens beside the image tokens. The base stays frozen; half the captions
are empty (the paper's 50%), so the net learns to read the outlines rather than the caption.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from controlnet.mini.checkpoint import atomic_save, load
from controlnet.mini.dit_config import MiniDiTConfig
from controlnet.mini.loop import Stage
from controlnet.training.flow_matching import flux_controlnet_loss, sample_sigmas
from controlnet.world import World

CONDITION = "edges"
EMPTY_CAPTION_RATE = 0.5


@torch.no_grad()
def edge_maps(config: MiniDiTConfig, n: int, path: Path, batch: int = 256, progress: bool = True) -> torch.Tensor:
    """The edges maps of world samples 0..n-1 (the pictures whose latents are cached), one channel, cached."""
    if path.exists():
        return load(path)
    world = World(config.world_seed, config.image_size, conditions=(CONDITION,))
    maps = [torch.from_numpy(world.batch(range(s, min(s + batch, n)))[2][CONDITION][..., 0].copy())
            for s in tqdm(range(0, n, batch), desc="edges maps", disable=not progress)]
    maps = torch.cat(maps)
    atomic_save(maps, path)
    return maps


def hint_pixels(maps: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) maps -> (B, 3, H, W) in [-1, 1], what the pipelines feed an XLabs net."""
    return (maps.float() / 127.5 - 1)[:, None].expand(-1, 3, -1, -1)


def controlnet_stage(config: MiniDiTConfig, transformer, controlnet, latents: dict, texts: dict, maps: torch.Tensor,
                     scaling_factor: float, scheduler, folder: Path, budget_s: float, on_checkpoint=None) -> Stage:
    mean, std = latents["mean"].float(), latents["std"].float()
    states, pooled, index = texts["states"].float(), texts["pooled"].float(), texts["index"]
    batch = config.controlnet.batch_size
    transformer.requires_grad_(False)

    def step(i: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(config.world_seed * 1_000_003 + 500_000_000 + i)
        idx = torch.randint(0, len(maps), (batch,), generator=gen)
        x = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scaling_factor
        text = index[idx].clone()
        text[torch.rand(batch, generator=gen) < EMPTY_CAPTION_RATE] = texts["empty"]
        noise = torch.randn(x.shape, generator=gen)
        sigmas = sample_sigmas("logit_normal", batch, scheduler, gen)
        loss = flux_controlnet_loss(transformer, controlnet, x, states[text], pooled[text], hint_pixels(maps[idx]),
                                    noise, sigmas)
        return {"loss": loss}

    return Stage(f"controlnet-{CONDITION}", folder, {"controlnet": controlnet}, step, config.controlnet.lr,
                 config.controlnet.max_steps, budget_s, config.controlnet.warmup_steps, on_checkpoint=on_checkpoint)


def held_out(config: MiniDiTConfig, n: int) -> list:
    """Held-out world samples (seed + 1) with their edges maps."""
    return list(World(config.world_seed + 1, config.image_size, conditions=(CONDITION,)).take(n))


def as_array(images) -> np.ndarray:
    return (np.clip(np.asarray(images), 0, 1) * 255).round().astype(np.uint8)
