"""Sampling an SD3 / SD3.5 base with ControlNets (issue 21 §2): flow matching (the scheduler's own
shift), classifier-free guidance on a [negative; prompt] batch, one or several ControlNets with
start/end windows, the InstantX conventions (zero pooled projections, control latents without the
VAE shift), the SAI SD3.5 ones (the base's positional embedding, no text stream, real pooled
projections, the shift applied, a per-model hint transform) and the 17-channel inpainting net
(alimama: the masked picture's latent and the kept area, as `StableDiffusion3ControlNetInpaintingPipeline`).

Step for step what diffusers' `StableDiffusion3ControlNetPipeline` does, from prompt embeddings,
with two deliberate differences:
- the control latent is the VAE posterior's mean. diffusers draws a *sample* from the unseeded
  global RNG, so its pictures cannot be reproduced from the seed; the mean is that sample's
  expectation and keeps the seed's noise exactly diffusers' noise;
- each SAI net's hint transform (canny `img·255·0.5+0.5`, depth `1−img`) is applied; diffusers
  0.42 leaves it to the user.
A ControlNet outside its window is not run (diffusers runs it and multiplies by 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils.torch_utils import randn_tensor

from controlnet.errors import InputError
from controlnet.nn.controlled_transformer import controlled_sd3
from controlnet.nn.dit_controlnet import SD3ControlNet, hint_transform_fn
from controlnet.pipeline.flux import (
    active,
    check_steps_and_size,
    img2img_start,
    pixels,
    vae_scale_factor,
    vae_shift,
)
from controlnet.pipeline.loading import TransformerBase
from controlnet.pipeline.text import truncating_ids


@dataclass
class SD3Control:
    """One ControlNet and its hint: a PIL image, or pixels (B, 3, H, W) in [-1, 1]. The inpainting net
    takes the picture as `image` and the area to repaint as `mask` (white / 1 = repaint)."""

    controlnet: SD3ControlNet
    image: object
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mask: object = None


def control_latents(unit: SD3Control, vae, width: int, height: int, batch: int, guided: bool) -> torch.Tensor:
    """The control latent as this ControlNet was trained on it: its hint transform, the VAE mean,
    the shift only for nets trained with real pooled projections (not InstantX)."""
    cn = unit.controlnet
    image = unit.image
    if not torch.is_tensor(image):
        image = VaeImageProcessor(vae_scale_factor=vae_scale_factor(vae)).preprocess(image, height=height, width=width)
    image = hint_transform_fn(cn.config.hint_transform)(image * 0.5 + 0.5) * 2 - 1
    image = image.repeat_interleave(batch if image.shape[0] == 1 else 1, dim=0).to(device=vae.device, dtype=vae.dtype)
    if cn.config.extra_conditioning_channels:
        return _inpaint_latents(unit.mask, image, vae, width, height, guided)
    shift = 0 if cn.config.force_zeros_for_pooled_projection else vae_shift(vae)
    latents = (vae.encode(image).latent_dist.mean - shift) * vae.config.scaling_factor
    return torch.cat([latents] * 2) if guided else latents


def _inpaint_latents(mask, image: torch.Tensor, vae, width: int, height: int, guided: bool) -> torch.Tensor:
    """The inpainting net's 17 channels: the latent of the picture with the repaint area black-filled
    (−1), with the shift, then the area to keep (1) at latent size."""
    f = vae_scale_factor(vae)
    if not torch.is_tensor(mask):
        mask = VaeImageProcessor(vae_scale_factor=f, do_convert_grayscale=True, do_normalize=False,
                                 do_binarize=True).preprocess(mask, height=height, width=width)
    mask = mask.repeat_interleave(image.shape[0] if mask.shape[0] == 1 else 1, dim=0).to(image)
    masked = image.clone()
    masked[(mask > 0.5).repeat(1, 3, 1, 1)] = -1
    latents = (vae.encode(masked).latent_dist.mean - vae_shift(vae)) * vae.config.scaling_factor
    keep = 1 - torch.nn.functional.interpolate(mask, size=(height // f, width // f))
    latents = torch.cat([latents, keep.to(latents)], dim=1)
    return torch.cat([latents] * 2) if guided else latents


@torch.no_grad()
def sample_sd3(
    transformer,
    vae,
    scheduler,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    controls: list[SD3Control] = (),
    *,
    width: int,
    height: int,
    steps: int = 28,
    guidance_scale: float = 7.0,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_pooled_prompt_embeds: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    output_type: str = "pt",
    init_image=None,
    strength: float = 1.0,
):
    """Latents (`output_type="latent"`) or images (`"pt"` in [0, 1], `"pil"`, `"np"`); guidance > 1
    needs the negative embeddings (the empty prompt's, when there is no negative prompt). `init_image`
    (img2img, as `StableDiffusion3Img2ImgPipeline`): the picture to start from, noised to the first of
    the last `strength` of the steps."""
    guided = guidance_scale > 1
    device = transformer.device  # diffusers' `device` walks every module: look it up once
    check_steps_and_size(steps, width, height)
    _check(controls, transformer, vae, width, height, guided, negative_prompt_embeds, negative_pooled_prompt_embeds)
    batch = prompt_embeds.shape[0]
    if guided:
        prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds])
        pooled_prompt_embeds = torch.cat([negative_pooled_prompt_embeds, pooled_prompt_embeds])
    conds = [control_latents(u, vae, width, height, batch, guided) for u in controls]
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    f = vae_scale_factor(vae)
    init = None
    if init_image is not None:  # a posterior sample drawn before the noise, as diffusers draws it
        init = vae.encode(pixels(init_image, width, height, batch, vae)).latent_dist.sample(generator)
        init = ((init - vae_shift(vae)) * vae.config.scaling_factor).to(prompt_embeds.dtype)
    latents = randn_tensor((batch, transformer.config.in_channels, height // f, width // f), generator=generator,
                           device=device, dtype=prompt_embeds.dtype)
    if init is not None:
        timesteps = img2img_start(scheduler, timesteps, strength)
        latents = scheduler.scale_noise(init, timesteps[:1].repeat(batch), latents)
    zero_pooled = torch.zeros_like(pooled_prompt_embeds)  # InstantX nets' pooled input, the same every step
    for i, t in enumerate(timesteps):
        x = torch.cat([latents] * 2) if guided else latents
        timestep = t.expand(x.shape[0])
        residuals = [
            u.controlnet(x, c, timestep, zero_pooled if u.controlnet.config.force_zeros_for_pooled_projection
                         else pooled_prompt_embeds,
                         prompt_embeds if u.controlnet.context_embedder is not None else None, u.scale,
                         base_pos_embed=transformer.pos_embed)
            for u, c in zip(controls, conds) if active(u, i, len(timesteps))
        ]
        pred = controlled_sd3(transformer, x, prompt_embeds, pooled_prompt_embeds, timestep, residuals)
        if guided:
            uncond, cond = pred.chunk(2)
            pred = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    if output_type == "latent":
        return latents
    image = vae.decode(latents / vae.config.scaling_factor + vae_shift(vae), return_dict=False)[0]
    return VaeImageProcessor(vae_scale_factor=f).postprocess(image, output_type=output_type)


def _check(controls, transformer, vae, width, height, guided, negative, negative_pooled) -> None:
    """Every input problem as one line, before any compute."""
    multiple = vae_scale_factor(vae) * transformer.config.patch_size
    if width % multiple or height % multiple:
        raise InputError(f"width and height must be multiples of {multiple} for this base (got {width}×{height})")
    largest = (transformer.config.pos_embed_max_size or 0) * multiple
    if largest and max(width, height) > largest:
        raise InputError(f"width and height must be at most {largest} for this base (its positional embedding's "
                         f"grid); got {width}×{height}")
    if guided and (negative is None or negative_pooled is None):
        raise InputError("guidance_scale > 1 needs negative_prompt_embeds and negative_pooled_prompt_embeds "
                         "(the empty prompt's when there is no negative prompt)")
    for k, u in enumerate(controls):
        cn = u.controlnet
        if not isinstance(cn, SD3ControlNet):
            raise InputError(f"ControlNet {k + 1} is not an SD3 ControlNet: it was made for another base model")
        if cn.inner_dim != transformer.inner_dim:
            raise InputError(f"ControlNet {k + 1} is {cn.inner_dim} wide, the SD3 base {transformer.inner_dim}: "
                             "it was made for another base model")
        if not 0 <= u.start < u.end <= 1:
            raise InputError(f"ControlNet {k + 1}: start and end must satisfy 0 ≤ start < end ≤ 1 (got {u.start}, {u.end})")
        if cn.config.extra_conditioning_channels != (0 if u.mask is None else 1):
            raise InputError(f"ControlNet {k + 1}: " + ("an inpainting ControlNet needs the mask of the area to repaint"
                             if u.mask is None else "a mask is for the inpainting ControlNet; this one takes no mask"))


def _clip(tokenizer, text_encoder, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate hidden states, projected pooled vector) of one CLIP, as SD3 reads them."""
    ids = truncating_ids(tokenizer, prompts, tokenizer.model_max_length, "CLIP")
    out = text_encoder(ids.to(text_encoder.device), output_hidden_states=True)
    return out.hidden_states[-2], out[0]


def encode_sd3_prompt(tokenizers, text_encoders, prompts: list[str], max_sequence_length: int = 256,
                      joint_attention_dim: int | None = None):
    """(token states, pooled vector) of SD3's three encoders: CLIP-L and CLIP-G side by side on the
    channels, zero-padded to T5's width, then T5's tokens after them; pooled = CLIP-L ‖ CLIP-G.
    A base without T5 gets zeros in its place (diffusers' rule; the width is `joint_attention_dim`),
    one without CLIP-G the first CLIP's alone (the small one-CLIP bases)."""
    if not 1 <= max_sequence_length <= 512:
        raise InputError(f"max_sequence_length must be 1..512, got {max_sequence_length}")
    clips = [_clip(t, e, prompts) for t, e in zip(tokenizers[:2], text_encoders[:2]) if e is not None]
    clip = torch.cat([states for states, _ in clips], dim=-1).to(text_encoders[0].dtype)
    pooled = torch.cat([p for _, p in clips], dim=-1).to(text_encoders[0].dtype)
    if text_encoders[2] is None:
        width = joint_attention_dim or clip.shape[-1]
        t5 = clip.new_zeros(clip.shape[0], max_sequence_length, width)
    else:
        ids = truncating_ids(tokenizers[2], prompts, max_sequence_length, "T5 (max_sequence_length)")
        t5 = text_encoders[2](ids.to(text_encoders[2].device))[0].to(text_encoders[2].dtype)
    clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
    return torch.cat([clip, t5], dim=-2), pooled


@dataclass
class SD3Base(TransformerBase):
    """An SD3 / SD3.5 base model's components, loaded offline from a diffusers folder (with its T5)."""

    kind = "sd3"
    described = "an SD3 base model"

    transformer: object
    vae: object
    scheduler: object
    text_encoder: object
    text_encoder_2: object = None  # CLIP-G; None for one-CLIP bases
    text_encoder_3: object = None  # T5; None: zeros in its place, as diffusers
    tokenizer: object = None
    tokenizer_2: object = None
    tokenizer_3: object = None

    @torch.no_grad()
    def __call__(self, prompt: str | list[str], controls: list[SD3Control] = (), *, negative_prompt: str | list[str] = "",
                 guidance_scale: float = 7.0, max_sequence_length: int = 256, **kwargs):
        """`sample_sd3` from text; the negative prompt defaults to the empty one, as in diffusers."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != len(prompts):
            raise InputError(f"{len(negatives)} negative prompts for {len(prompts)} prompts; give one, or one per prompt")
        tokenizers = (self.tokenizer, self.tokenizer_2, self.tokenizer_3)
        encoders = (self.text_encoder, self.text_encoder_2, self.text_encoder_3)
        width = self.transformer.config.joint_attention_dim
        embeds, pooled = encode_sd3_prompt(tokenizers, encoders, prompts, max_sequence_length, width)
        if guidance_scale > 1:
            kwargs["negative_prompt_embeds"], kwargs["negative_pooled_prompt_embeds"] = encode_sd3_prompt(
                tokenizers, encoders, negatives, max_sequence_length, width)
        return sample_sd3(self.transformer, self.vae, self.scheduler, embeds, pooled, controls,
                          guidance_scale=guidance_scale, **kwargs)
