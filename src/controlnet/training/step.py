"""One training step's pieces: its random draws, the locked VAE encoder, and the diffusion loss (paper §3.3).
Prompts are encoded by `controlnet.pipeline.text.encode_sd`, the same encoder sampling uses.

All randomness of a micro-batch (noise, time steps, which prompts are dropped, the VAE posterior
sample) is drawn for the *global* batch from a generator seeded by (seed, micro-batch number), and
each process takes its slice. So the draws do not depend on how many processes share the batch, and
a resumed run draws exactly what the uninterrupted one drew, with no RNG state to carry.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Draws:
    noise: torch.Tensor  # like the latents
    posterior: torch.Tensor  # N(0, 1) for z = mean + std * posterior
    timesteps: torch.Tensor  # int64
    drop_prompt: torch.Tensor  # bool


def draw(seed: int, micro_batch: int, global_batch: int, rank_slice: slice, latent_shape: tuple[int, ...],
         num_timesteps: int, empty_prompt_prob: float) -> Draws:
    """This process's share of the global micro-batch's random draws (on the CPU, moved by the caller)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + micro_batch) % (2**63))
    shape = (global_batch, *latent_shape)
    noise = torch.randn(shape, generator=g)
    posterior = torch.randn(shape, generator=g)
    timesteps = torch.randint(0, num_timesteps, (global_batch,), generator=g)
    drop = torch.rand(global_batch, generator=g) < empty_prompt_prob
    return Draws(noise[rank_slice], posterior[rank_slice], timesteps[rank_slice], drop[rank_slice])


def drop_prompts(prompts: list[str], drop: torch.Tensor) -> list[str]:
    """The paper's 50% rule: replace the chosen prompts by the empty string (fed to both networks)."""
    return ["" if d else p for p, d in zip(prompts, drop.tolist())]


@torch.no_grad()
def encode_images(vae, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE posterior, in the VAE's dtype."""
    dist = vae.encode(images.to(vae.dtype)).latent_dist
    return dist.mean, dist.std


def diffusion_loss(denoiser, scheduler, latents, encoder_hidden_states, hint, noise, timesteps,
                   prediction_type: str, control_types: torch.Tensor | None = None) -> torch.Tensor:
    """|| target - prediction ||² with target ε (SD 1.x) or v (SD 2.x 768-v), as the base model was trained.
    `control_types`: a union ControlNet's type index per sample."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    union = {} if control_types is None else {"control_types": control_types}
    pred = denoiser(noisy, timesteps, encoder_hidden_states, hint, **union)
    if prediction_type == "epsilon":
        target = noise
    elif prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unknown prediction type {prediction_type!r}")
    return F.mse_loss(pred.float(), target.float())
