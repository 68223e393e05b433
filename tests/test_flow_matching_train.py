"""The ControlNet training step for SD3 and Flux bases equals the step of diffusers' example scripts on one
fixed batch (loss and every ControlNet gradient ≤ 1e-5), and the base gets no gradient.

The references below reproduce, with diffusers' own `SD3ControlNetModel` / `FluxControlNetModel` and
transformers, the training loop body of
- `examples/controlnet/train_controlnet_sd3.py` (diffusers commit 58eb52c0): the frozen base (line 1045), `get_sigmas` (lines 1287-1296)
  and the step (lines 1308-1377: timesteps from u, flow-matching noise, ControlNet, transformer with
  `block_controlnet_hidden_states`, precondition, `compute_loss_weighting_for_sd3`, per-sample mean);
- `examples/controlnet/train_controlnet_flux.py` (same commit): the step (lines 1247-1337: packing with
  `FluxControlNetPipeline._pack_latents`, `_prepare_latent_image_ids`, σ from the scheduler, guidance
  vector, `timesteps / 1000`, plain `F.mse_loss` on noise − latents).
The VAE and text encoders are left out: both scripts feed the transformer what they produce, so the step
starts from latents and embeddings. u (the sampled density) and the noise are fixed.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from diffusers import (
    FlowMatchEulerDiscreteScheduler,
    FluxControlNetModel,
    FluxControlNetPipeline,
    FluxTransformer2DModel,
    SD3ControlNetModel,
    SD3Transformer2DModel,
)
from diffusers.training_utils import compute_density_for_timestep_sampling, compute_loss_weighting_for_sd3

from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet
from controlnet.training.flow_matching import (
    flux_controlnet_loss,
    loss_weighting,
    sample_sigmas,
    sd3_controlnet_loss,
)
from tiny_models import randomized

TOL = 1e-5
SD3_BASE = dict(sample_size=32, patch_size=1, in_channels=8, num_layers=4, attention_head_dim=8, num_attention_heads=4,
                joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=8,
                qk_norm="rms_norm")
FLUX_BASE = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                 guidance_embeds=True)
U = torch.tensor([0.15, 0.72])  # the density sample u of `compute_density_for_timestep_sampling`, fixed


def _sigmas(scheduler, timesteps, n_dim):
    """The example's `get_sigmas`: look each sampled timestep up in the scheduler."""
    idx = [(scheduler.timesteps == t).nonzero().item() for t in timesteps]
    sigma = scheduler.sigmas[idx].flatten()
    return sigma.view(-1, *[1] * (n_dim - 1))


def _sampled(scheduler):
    indices = (U * scheduler.config.num_train_timesteps).long()
    return scheduler.timesteps[indices]


def _batch(seed, shape, text):
    g = torch.Generator().manual_seed(seed)
    return dict(latents=torch.randn(*shape, generator=g), control_latents=torch.randn(*shape, generator=g),
                noise=torch.randn(*shape, generator=g), prompt_embeds=torch.randn(2, 5, 32, generator=g),
                pooled_prompt_embeds=torch.randn(2, text, generator=g))


def _ours_of(cls, ref):
    net = cls(**ref.config)
    net.load_state_dict(ref.state_dict(), strict=True)
    return net


def _assert_same_step(ref_loss, ref_net, loss, net, base):
    assert abs(loss.item() - ref_loss.item()) <= TOL * max(1.0, abs(ref_loss.item()))
    ref_grads = {n: p.grad for n, p in ref_net.named_parameters()}
    grads = dict(net.named_parameters())
    assert set(ref_grads) == set(grads)
    assert any(g is not None and g.abs().max() > 0 for g in ref_grads.values())
    for name, p in grads.items():
        assert (p.grad is None) == (ref_grads[name] is None), name
        if p.grad is not None:
            assert (p.grad - ref_grads[name]).abs().max().item() <= TOL, name
    assert all(p.grad is None for p in base.parameters())


def sd3_reference(base, net, batch, scheduler, weighting_scheme, precondition_outputs, timesteps=None):
    """train_controlnet_sd3.py, lines 1308-1377, from latents and embeddings on (`timesteps`: the sampled
    ones; by default those of the fixed density sample U)."""
    model_input, noise = batch["latents"], batch["noise"]
    timesteps = _sampled(scheduler) if timesteps is None else timesteps
    sigmas = _sigmas(scheduler, timesteps, model_input.ndim)
    noisy_model_input = (1.0 - sigmas) * model_input + sigmas * noise
    samples = net(hidden_states=noisy_model_input, timestep=timesteps, encoder_hidden_states=batch["prompt_embeds"],
                  pooled_projections=batch["pooled_prompt_embeds"], controlnet_cond=batch["control_latents"],
                  return_dict=False)[0]
    model_pred = base(hidden_states=noisy_model_input, timestep=timesteps, encoder_hidden_states=batch["prompt_embeds"],
                      pooled_projections=batch["pooled_prompt_embeds"], block_controlnet_hidden_states=samples,
                      return_dict=False)[0]
    if precondition_outputs:
        model_pred = model_pred * (-sigmas) + noisy_model_input
    weighting = compute_loss_weighting_for_sd3(weighting_scheme=weighting_scheme, sigmas=sigmas)
    target = model_input if precondition_outputs else noise - model_input
    loss = torch.mean((weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(target.shape[0], -1), 1)
    return loss.mean(), sigmas.flatten()


@pytest.mark.parametrize("weighting_scheme, precondition_outputs",
                         [("logit_normal", True), ("sigma_sqrt", False), ("cosmap", True), ("none", False)])
def test_the_sd3_step_equals_train_controlnet_sd3(weighting_scheme, precondition_outputs):
    torch.manual_seed(0)
    base = randomized(SD3Transformer2DModel(**SD3_BASE), 1)
    ref_net = randomized(SD3ControlNetModel(**dict(SD3_BASE, num_layers=2)), 2)  # from_transformer's shape, random
    net = _ours_of(SD3ControlNet, ref_net)
    ours_base = copy.deepcopy(base)  # trainable until the step freezes it
    base.requires_grad_(False)  # as the example freezes it
    batch = _batch(3, (2, 8, 8, 8), 64)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0)

    ref_loss, sigmas = sd3_reference(base, ref_net, batch, scheduler, weighting_scheme, precondition_outputs)
    ref_loss.backward()
    loss = sd3_controlnet_loss(ours_base, net, sigmas=sigmas, weighting_scheme=weighting_scheme,
                               precondition_outputs=precondition_outputs, **batch)
    loss.backward()
    _assert_same_step(ref_loss, ref_net, loss, net, ours_base)


def flux_reference(base, net, batch, scheduler, guidance_scale, timesteps=None):
    """train_controlnet_flux.py, lines 1247-1337, from latents and embeddings on (the noise is packed from
    the unpacked one the test gives both sides)."""
    latents, controls = batch["latents"], batch["control_latents"]
    b, c, h, w = latents.shape
    pixel_latents = FluxControlNetPipeline._pack_latents(latents, b, c, h, w)
    control_image = FluxControlNetPipeline._pack_latents(controls, b, c, h, w)
    latent_image_ids = FluxControlNetPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latents.device, latents.dtype)
    noise = FluxControlNetPipeline._pack_latents(batch["noise"], b, c, h, w)
    timesteps = _sampled(scheduler) if timesteps is None else timesteps
    sigmas = _sigmas(scheduler, timesteps, pixel_latents.ndim)
    noisy_model_input = (1.0 - sigmas) * pixel_latents + sigmas * noise
    guidance_vec = torch.full((b,), guidance_scale) if base.config.guidance_embeds else None
    txt_ids = torch.zeros(batch["prompt_embeds"].shape[1], 3)
    common = dict(hidden_states=noisy_model_input, timestep=timesteps / 1000, guidance=guidance_vec,
                  pooled_projections=batch["pooled_prompt_embeds"], encoder_hidden_states=batch["prompt_embeds"],
                  txt_ids=txt_ids, img_ids=latent_image_ids, return_dict=False)
    double, single = net(controlnet_cond=control_image, **common)
    noise_pred = base(controlnet_block_samples=double, controlnet_single_block_samples=single, **common)[0]
    loss = F.mse_loss(noise_pred.float(), (noise - pixel_latents).float(), reduction="mean")
    return loss, sigmas.flatten()


@pytest.mark.parametrize("guidance_embeds", [True, False])
def test_the_flux_step_equals_train_controlnet_flux(guidance_embeds):
    torch.manual_seed(0)
    config = dict(FLUX_BASE, guidance_embeds=guidance_embeds)
    base = randomized(FluxTransformer2DModel(**config), 1)
    ref_net = randomized(FluxControlNetModel(**dict(config, num_layers=1, num_single_layers=2)), 2)
    net = _ours_of(FluxControlNet, ref_net)
    ours_base = copy.deepcopy(base)
    base.requires_grad_(False)
    batch = _batch(4, (2, 4, 8, 8), 32)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)

    ref_loss, sigmas = flux_reference(base, ref_net, batch, scheduler, guidance_scale=3.5)
    ref_loss.backward()
    loss = flux_controlnet_loss(ours_base, net, sigmas=sigmas, guidance_scale=3.5, **batch)
    loss.backward()
    _assert_same_step(ref_loss, ref_net, loss, net, ours_base)


@pytest.mark.parametrize("scheme", ["logit_normal", "mode", "none", "sigma_sqrt"])
@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_sigmas_are_sampled_as_the_examples_sample_them(scheme, shift):
    """Both examples: u from `compute_density_for_timestep_sampling` with their default flags, timesteps
    at ⌊u·N⌋ of the scheduler, σ by `get_sigmas`."""
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    u = compute_density_for_timestep_sampling(scheme, 64, logit_mean=0.0, logit_std=1.0, mode_scale=1.29,
                                              generator=torch.Generator().manual_seed(5))
    timesteps = scheduler.timesteps[(u * 1000).long()]
    expected = _sigmas(scheduler, timesteps, 1)
    sigmas = sample_sigmas(scheme, 64, scheduler, torch.Generator().manual_seed(5))
    assert torch.equal(sigmas, expected)
    assert len(set(sigmas.tolist())) > 32  # 64 draws, not one value repeated


def test_bad_weighting_schemes_and_shapes_are_named():
    with pytest.raises(ValueError, match="unknown weighting scheme 'cosine'.*sigma_sqrt"):
        loss_weighting("cosine", torch.tensor([0.5]))
    with pytest.raises(ValueError, match="unknown weighting scheme"):
        sample_sigmas("cosine", 2, FlowMatchEulerDiscreteScheduler())
    base = randomized(SD3Transformer2DModel(**SD3_BASE), 1)
    net = _ours_of(SD3ControlNet, randomized(SD3ControlNetModel(**dict(SD3_BASE, num_layers=1)), 2))
    batch = _batch(3, (2, 8, 8, 8), 64)
    with pytest.raises(ValueError, match="sigmas one value per sample"):
        sd3_controlnet_loss(base, net, sigmas=torch.tensor([0.5]), **batch)
