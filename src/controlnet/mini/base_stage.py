"""Stage 2: the text encoder and the UNet learn, jointly, to denoise latents given the caption.

The world pictures are encoded once (posterior mean and std), and the latent scale that makes
them unit-variance is measured here and stored as the VAE's `scaling_factor`, as SD does. Then:
ε-prediction with min-SNR weighting, 10% empty captions (so classifier-free guidance works), EMA.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from controlnet.files import write_text
from controlnet.metrics.adherence import colour_check
from controlnet.mini import pipeline as mini_pipeline
from controlnet.mini.checkpoint import atomic_save, load
from controlnet.mini.config import MiniConfig
from controlnet.mini.loop import Stage
from controlnet.mini.models import build_train_scheduler
from controlnet.mini.vae_stage import images_to_tensor
from controlnet.world import World, save_grid


def tokenize(tokenizer, captions: list[str]) -> torch.Tensor:
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


@torch.no_grad()
def encode_latents(config: MiniConfig, vae, tokenizer, path: Path, batch: int = 64, progress: bool = True) -> dict:
    """Encode world samples 0..N-1 once (cached at `path`); measure the latent scaling factor."""
    if path.exists():
        return load(path)
    world = World(config.world_seed, config.image_size, conditions=())
    vae.eval()
    means, stds, ids = [], [], []
    for start in tqdm(range(0, config.latent_samples, batch), desc="encode latents", disable=not progress):
        images, captions, _ = world.batch(range(start, min(start + batch, config.latent_samples)))
        dist = vae.encode(images_to_tensor(images)).latent_dist
        means.append(dist.mean.half())
        stds.append(dist.std.half())
        ids.append(tokenize(tokenizer, captions))
    mean, std = torch.cat(means).float(), torch.cat(stds).float()
    sampled = mean + std * torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    cache = {"mean": mean.half(), "std": std.half(), "ids": torch.cat(ids).to(torch.int16),
             "scaling_factor": float(1.0 / sampled.std()), "latent_mean": float(sampled.mean())}
    atomic_save(cache, path)
    return cache


def base_stage(config: MiniConfig, unet, text_encoder, tokenizer, vae, cache: dict, folder: Path,
               budget_s: float) -> Stage:
    scheduler = build_train_scheduler()
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    weight = (snr.clamp(max=config.snr_gamma) / snr) if config.snr_gamma else torch.ones_like(snr)
    mean, std, ids = cache["mean"].float(), cache["std"].float(), cache["ids"].long()
    scale = cache["scaling_factor"]
    empty = tokenize(tokenizer, [""])[0]
    batch = config.base.batch_size

    def step(i: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(config.world_seed * 1_000_003 + i)
        idx = torch.randint(0, len(mean), (batch,), generator=gen)
        z = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=gen)) * scale
        text = ids[idx].clone()
        text[torch.rand(batch, generator=gen) < config.empty_caption_rate] = empty
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=gen)
        noisy = scheduler.add_noise(z, noise, t)
        pred = unet(noisy, t, text_encoder(text)[0]).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        return {"loss": (weight[t] * per_sample).mean(), "mse": per_sample.mean()}

    def show(i: int, modules: dict) -> None:
        grid, share = sample_grid(config, vae, modules["text_encoder"], tokenizer, modules["unet"], steps=config.sample_steps)
        save_grid(grid, folder / "samples" / f"step_{i:06d}.png", scale=3)
        log = folder / "samples" / "adherence.txt"
        before = log.read_text() if log.is_file() else ""
        write_text(log, before + f"step {i}: single-shape colour adherence {share:.2f}\n")

    return Stage("base", folder, {"unet": unet, "text_encoder": text_encoder}, step, config.base.lr,
                 config.base.max_steps, budget_s, config.base.warmup_steps, ema_decay=config.ema_decay, on_checkpoint=show)


@torch.no_grad()
def sample_grid(config: MiniConfig, vae, text_encoder, tokenizer, unet, prompts: int = 8, per_prompt: int = 4,
                steps: int = 20, guidance: float = 4.0) -> tuple[list[list[np.ndarray]], float]:
    """Rows: a held-out single-shape world picture, then samples for its caption. Also returns the
    share of samples that pass the colour check."""
    world = World(config.world_seed + 1, config.image_size, min_shapes=1, max_shapes=1, conditions=())
    samples = list(world.take(prompts))
    for m in (text_encoder, unet, vae):
        m.eval()
    pipe = mini_pipeline.assemble(vae, text_encoder, tokenizer, unet)
    pipe.set_progress_bar_config(disable=True)
    out = pipe([s.caption for s in samples], num_images_per_prompt=per_prompt, num_inference_steps=steps,
               guidance_scale=guidance, output_type="np", generator=torch.Generator().manual_seed(0),
               height=config.image_size, width=config.image_size).images
    images = (out * 255).round().astype(np.uint8).reshape(prompts, per_prompt, *out.shape[1:])
    for m in (text_encoder, unet):
        m.train()
    passed = [colour_check(img, s.scene)["ok"] for s, row in zip(samples, images) for img in row]
    return [[s.image, *row] for s, row in zip(samples, images)], float(np.mean(passed))
