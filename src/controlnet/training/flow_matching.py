"""The ControlNet training step for transformer bases (SD3/SD3.5, Flux): rectified-flow matching.

    x_σ = (1 − σ)·x + σ·ε,   v = base(x_σ, σ; ControlNet(x_σ, c)),   loss = mean(w(σ)·(v − (ε − x))²)

Only the ControlNet learns; the base is frozen here, as the diffusers examples freeze it. The noise and
the σ are arguments, so a step is a pure function of its inputs (the caller samples them). σ → timestep
is the flow-matching scheduler's own relation, `timestep = σ · num_train_timesteps` (1000).
"""

from __future__ import annotations

import math

import torch

from controlnet.nn.controlled_transformer import controlled_flux, controlled_sd3
from controlnet.pipeline.flux import image_ids, pack
from controlnet.training.config import WEIGHTING_SCHEMES

NUM_TRAIN_TIMESTEPS = 1000
# WEIGHTING_SCHEMES: those that sample σ non-uniformly weigh every σ alike; sigma_sqrt and cosmap weigh
# the loss (SD3 paper §3.1). Named in the config, beside its option.


def loss_weighting(scheme: str, sigmas: torch.Tensor) -> torch.Tensor:
    """w(σ) of the SD3 paper: σ⁻² for 'sigma_sqrt', 2 / (π(1 − 2σ + 2σ²)) for 'cosmap', else 1."""
    if scheme not in WEIGHTING_SCHEMES:
        raise ValueError(f"unknown weighting scheme {scheme!r}; one of {', '.join(WEIGHTING_SCHEMES)}")
    if scheme == "sigma_sqrt":
        return sigmas.float() ** -2.0
    if scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas**2))
    return torch.ones_like(sigmas)


def sample_sigmas(scheme: str, batch_size: int, scheduler, generator: torch.Generator | None = None,
                  logit_mean: float = 0.0, logit_std: float = 1.0, mode_scale: float = 1.29) -> torch.Tensor:
    """One σ per sample from the training schedule of a flow-matching `scheduler` (its shift included):
    u ~ sigmoid(N(mean, std)) for 'logit_normal', the SD3 paper's mode density for 'mode', else uniform;
    σ = the schedule's σ at index ⌊u · num_train_timesteps⌋. Defaults are the examples' flags."""
    loss_weighting(scheme, torch.zeros(1))  # an unknown scheme fails here
    if scheme == "logit_normal":
        u = torch.sigmoid(torch.normal(logit_mean, logit_std, size=(batch_size,), generator=generator))
    else:
        u = torch.rand(batch_size, generator=generator)
        if scheme == "mode":
            u = 1 - u - mode_scale * (torch.cos(math.pi * u / 2) ** 2 - 1 + u)
    n = scheduler.config.num_train_timesteps
    return scheduler.sigmas[:n][(u * n).long()]


def _noised(latents: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_σ and σ shaped to broadcast over the latent's other axes."""
    if noise.shape != latents.shape or sigmas.shape != latents.shape[:1]:
        raise ValueError(f"noise must have the latents' shape {tuple(latents.shape)} and sigmas one value per "
                         f"sample ({latents.shape[0]}); got {tuple(noise.shape)} and {tuple(sigmas.shape)}")
    s = sigmas.to(latents.dtype).view(-1, *[1] * (latents.ndim - 1))
    return (1.0 - s) * latents + s * noise, s


def _weighted_mse(pred: torch.Tensor, target: torch.Tensor, weighting: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of w·(pred − target)², then the batch mean, in float32."""
    err = weighting.float() * (pred.float() - target.float()) ** 2
    return err.reshape(target.shape[0], -1).mean(1).mean()


def sd3_controlnet_loss(
    transformer,
    controlnet,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    control_latents: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    weighting_scheme: str = "logit_normal",
    precondition_outputs: bool = True,
    controlnet_pooled: torch.Tensor | None = None,
) -> torch.Tensor:
    """One SD3/SD3.5 step's loss. `latents` and `control_latents`: VAE latents (B, C, H, W) with the VAE's
    shift and scale applied. `precondition_outputs` (the example's default) compares x̂ = x_σ − σ·v with x,
    i.e. σ²·‖v − (ε − x)‖²; off, the velocity is compared with ε − x. `controlnet_pooled`: what the
    ControlNet sees instead of the pooled embedding (zeros for InstantX nets, as they are sampled)."""
    transformer.requires_grad_(False)
    noisy, s = _noised(latents, noise, sigmas)
    timestep = sigmas * NUM_TRAIN_TIMESTEPS
    text = prompt_embeds if controlnet.context_embedder is not None else None  # the SAI nets have no text stream
    cn_pooled = pooled_prompt_embeds if controlnet_pooled is None else controlnet_pooled
    residuals = controlnet(noisy, control_latents, timestep, cn_pooled, encoder_hidden_states=text,
                           base_pos_embed=transformer.pos_embed)
    pred = controlled_sd3(transformer, noisy, prompt_embeds, pooled_prompt_embeds, timestep, controls=[residuals])
    if precondition_outputs:
        pred, target = pred * (-s) + noisy, latents
    else:
        target = noise - latents
    return _weighted_mse(pred, target, loss_weighting(weighting_scheme, s))


def flux_controlnet_loss(
    transformer,
    controlnet,
    latents: torch.Tensor,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    control_latents: torch.Tensor,
    noise: torch.Tensor,
    sigmas: torch.Tensor,
    guidance_scale: float = 3.5,
    controlnet_mode: torch.Tensor | None = None,
) -> torch.Tensor:
    """One Flux step's loss, unweighted (the Flux example weighs no σ). `latents`, `control_latents`,
    `noise`: unpacked (B, C, H, W), packed here into Flux's 2×2 tokens. A guidance-distilled base (dev)
    sees `guidance_scale`. Union nets take `controlnet_mode` (B, 1). XLabs nets (a hint encoder) take
    pixels (B, 3, H, W) in [-1, 1] as `control_latents`, as the pipeline feeds them."""
    transformer.requires_grad_(False)
    noisy, s = _noised(latents, noise, sigmas)
    noisy, target = pack(noisy), pack(noise - latents)
    b, _, h, w = latents.shape
    img_ids = image_ids(h, w, latents.dtype, latents.device)
    txt_ids = torch.zeros(prompt_embeds.shape[1], 3, dtype=latents.dtype, device=latents.device)
    guidance = (torch.full((b,), guidance_scale, dtype=latents.dtype, device=latents.device)
                if transformer.config.guidance_embeds else None)
    control = control_latents if controlnet.input_hint_block is not None else pack(control_latents)
    residuals = controlnet(noisy, control, sigmas, pooled_prompt_embeds, prompt_embeds, img_ids, txt_ids,
                           guidance=guidance if controlnet.config.guidance_embeds else None,
                           controlnet_mode=controlnet_mode)
    pred = controlled_flux(transformer, noisy, prompt_embeds, pooled_prompt_embeds, sigmas, img_ids, txt_ids,
                           guidance=guidance, controls=[residuals])
    return _weighted_mse(pred, target, torch.ones_like(sigmas).view(-1, 1, 1))
