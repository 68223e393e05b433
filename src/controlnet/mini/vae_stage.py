"""Stage 1: the autoencoder learns to squeeze 64×64 world pictures into 8×8×4 latents and back.

Loss: L1 reconstruction + L1 on image gradients (sharp outlines matter: ControlNets are later
judged on edges) + a very small KL term that keeps the latent space smooth and bounded + a latent
anchor: the first three latent channels should hold each 8×8 cell's mean colour. SD's own latents
look like a small picture; asking for it from step one gives the encoder a target long before the
decoder is any good, and halved the reconstruction error reached in a fixed time (docs/mini.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL

from controlnet.mini.config import MiniConfig
from controlnet.mini.loop import Stage
from controlnet.world import World, save_grid


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 → (B, 3, H, W) float in [-1, 1], SD's pixel convention."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    return x.detach().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def vae_stage(config: MiniConfig, vae: AutoencoderKL, folder: Path, budget_s: float) -> Stage:
    world = World(config.world_seed, config.image_size, conditions=())
    held_out = World(config.world_seed + 1, config.image_size, conditions=()).batch(range(8))[0]
    batch = config.vae.batch_size

    def step(i: int) -> dict[str, torch.Tensor]:
        x = images_to_tensor(world.batch(range(i * batch, (i + 1) * batch))[0])
        posterior = vae.encode(x).latent_dist
        noise = torch.Generator().manual_seed(config.world_seed * 1_000_003 + i)  # resumable: a function of i
        rec = vae.decode(posterior.sample(generator=noise)).sample
        l1 = (rec - x).abs().mean()
        edge = gradient_l1(rec, x)
        kl = posterior.kl().mean()
        anchor = (posterior.mean[:, :3] - F.avg_pool2d(x, x.shape[-1] // posterior.mean.shape[-1])).abs().mean()
        loss = l1 + config.edge_weight * edge + config.kl_weight * kl + config.latent_anchor_weight * anchor
        return {"loss": loss, "l1": l1, "kl": kl, "anchor": anchor}

    def show(i: int, modules: dict) -> None:
        """Held-out pictures (top) over their reconstructions (bottom)."""
        model = modules["vae"]
        model.eval()
        with torch.no_grad():
            rec = tensor_to_images(model.decode(model.encode(images_to_tensor(held_out)).latent_dist.mode()).sample)
        model.train()
        save_grid([list(held_out), list(rec)], folder / "samples" / f"recon_{i:06d}.png", scale=3)

    return Stage("vae", folder, {"vae": vae}, step, config.vae.lr, config.vae.max_steps, budget_s,
                 config.vae.warmup_steps, on_checkpoint=show)
