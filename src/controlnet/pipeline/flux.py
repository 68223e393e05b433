"""Sampling a Flux base with ControlNets (issue 21 §2, first slice): flow matching, Euler with the
resolution-dependent shift, Flux's embedded guidance (one forward per step) and optional true CFG,
one or several ControlNets (InstantX, union with a mode, XLabs) with start/end windows, and FLUX.1
Control models (control latent on the input channels).

Step for step what diffusers' `FluxControlNetPipeline` / `FluxControlPipeline` do, from prompt
embeddings (the text encoders are not part of this slice). Two differences that do not change a
number: a ControlNet outside its window is not run (diffusers runs it and multiplies by 0), and
ControlNets with different rules or block counts can be combined (`controlled_flux`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor

from controlnet.errors import InputError
from controlnet.nn.controlled_transformer import DiTResiduals, controlled_flux
from controlnet.nn.dit_controlnet import FLUX_UNION_MODES, FluxControlNet
from controlnet.pipeline.loading import TransformerBase
from controlnet.pipeline.text import truncating_ids


@dataclass
class FluxControl:
    """One ControlNet and its hint. `image`: a PIL image, or pixels (B, 3, H, W) in [-1, 1] as
    diffusers' image processor makes them. `start`/`end`: the fraction of steps it acts in. `mode`:
    a union net's control type, by index or by name (canny, tile, depth, blur, pose, gray, lq)."""

    controlnet: FluxControlNet
    image: object
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: int | str | None = None

    @property
    def mode_index(self) -> int | None:
        return FLUX_UNION_MODES.get(self.mode, -2) if isinstance(self.mode, str) else self.mode


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) latents -> (B, H/2 · W/2, 4C) tokens: Flux's 2×2 patches."""
    b, c, h, w = latents.shape
    return latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack` for an (h, w) latent."""
    b, _, c = tokens.shape
    return tokens.view(b, h // 2, w // 2, c // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c // 4, h, w)


def image_ids(h: int, w: int, dtype, device) -> torch.Tensor:
    """Rotary positions of the (h/2 × w/2) image tokens: (0, row, column)."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def pixels(image, width: int, height: int, batch: int, vae) -> torch.Tensor:
    """A hint as (batch, 3, H, W) pixels in [-1, 1], resized as diffusers resizes it."""
    if not torch.is_tensor(image):
        image = VaeImageProcessor(vae_scale_factor=vae_scale_factor(vae) * 2).preprocess(image, height=height, width=width)
    return image.repeat_interleave(batch if image.shape[0] == 1 else 1, dim=0).to(device=vae.device, dtype=vae.dtype)


def encode(vae, image: torch.Tensor, generator) -> torch.Tensor:
    """Packed, shifted and scaled VAE latents of pixels: a *sample* of the posterior, drawn from
    `generator` (as diffusers draws it, before the noise)."""
    latents = vae.encode(image).latent_dist.sample(generator)
    return pack((latents - vae_shift(vae)) * vae.config.scaling_factor)


def control_input(unit: FluxControl, width: int, height: int, batch: int, vae, generator) -> torch.Tensor:
    """What the ControlNet takes: pixels for XLabs nets (their own hint encoder), else packed latents."""
    image = pixels(unit.image, width, height, batch, vae)
    return image if unit.controlnet.input_hint_block is not None else encode(vae, image, generator)


def flux_timesteps(scheduler, steps: int, image_seq_len: int, device) -> torch.Tensor:
    """σ from 1 to 1/steps, shifted by μ(image tokens) as Flux-dev was trained."""
    c = scheduler.config
    mu = calculate_shift(image_seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    sigmas = np.linspace(1.0, 1 / steps, steps)
    return retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)[0]


def check_steps_and_size(steps: int, width: int, height: int) -> None:
    """Numbers every sampler needs before any compute: whole, positive."""
    for name, value in (("steps", steps), ("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number ≥ 1, got {value!r}")


def img2img_start(scheduler, timesteps: torch.Tensor, strength: float) -> torch.Tensor:
    """The last `strength` of the schedule, as diffusers' img2img pipelines cut it (`get_timesteps`); the
    scheduler steps from there."""
    if not 0 < strength <= 1:
        raise InputError(f"strength must be in (0, 1], got {strength!r}")
    n = len(timesteps)
    start = int(max(n - min(n * strength, n), 0))  # < n for any strength > 0: at least one step runs
    scheduler.set_begin_index(start)
    return timesteps[start:]


def active(unit: FluxControl, i: int, n: int) -> bool:
    """diffusers' window: step i of n is inside [start, end] (by fractions of steps)."""
    return not (i / n < unit.start or (i + 1) / n > unit.end)


@torch.no_grad()
def sample_flux(
    transformer,
    vae,
    scheduler,
    prompt_embeds: torch.Tensor,
    pooled_prompt_embeds: torch.Tensor,
    controls: list[FluxControl] = (),
    *,
    width: int,
    height: int,
    steps: int = 28,
    guidance_scale: float = 3.5,
    generator: torch.Generator | None = None,
    control_image=None,
    negative_prompt_embeds: torch.Tensor | None = None,
    negative_pooled_prompt_embeds: torch.Tensor | None = None,
    true_cfg_scale: float = 1.0,
    output_type: str = "pt",
    init_image=None,
    strength: float = 1.0,
):
    """Latents (`output_type="latent"`, packed as diffusers returns them) or images (`"pt"` tensors in
    [0, 1], `"pil"`, `"np"`). `control_image`: the hint of a FLUX.1 Control base (concatenated on
    its input channels). `init_image` (img2img, as `FluxControlNetImg2ImgPipeline`): the picture to
    start from, noised to the first of the last `strength` of the steps."""
    check_steps_and_size(steps, width, height)
    _check(controls, transformer, control_image, width, height, vae)
    device = transformer.device
    batch = prompt_embeds.shape[0]
    text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=device, dtype=prompt_embeds.dtype)
    conds = [control_input(u, width, height, batch, vae, generator) for u in controls]
    concat = encode(vae, pixels(control_image, width, height, batch, vae), generator) if control_image is not None else None
    init = encode(vae, pixels(init_image, width, height, batch, vae), generator) if init_image is not None else None
    modes = [torch.tensor(u.mode_index if u.mode is not None else -1).expand(batch).to(device, torch.long)[:, None]
             for u in controls]
    f = vae_scale_factor(vae)
    h, w = 2 * (height // (f * 2)), 2 * (width // (f * 2))
    channels = transformer.config.in_channels // (8 if control_image is not None else 4)
    latents = pack(randn_tensor((batch, channels, h, w), generator=generator, device=device, dtype=prompt_embeds.dtype))
    ids = image_ids(h, w, prompt_embeds.dtype, device)
    timesteps = flux_timesteps(scheduler, steps, latents.shape[1], device)
    if init is not None:
        timesteps = img2img_start(scheduler, timesteps, strength)
        latents = scheduler.scale_noise(init, timesteps[:1].repeat(batch), latents)
    texts = [(prompt_embeds, pooled_prompt_embeds)]
    if true_cfg_scale > 1 and negative_prompt_embeds is not None and negative_pooled_prompt_embeds is not None:
        texts.append((negative_prompt_embeds, negative_pooled_prompt_embeds))  # the ControlNets see the prompt only
    embedded = torch.full((batch,), guidance_scale, device=device)  # the same every step: made once
    guidance = embedded if transformer.config.guidance_embeds else None
    for i, t in enumerate(timesteps):
        timestep = t.expand(batch).to(latents.dtype) / 1000
        residuals = [_control(u, c, m, latents, timestep, embedded, prompt_embeds, pooled_prompt_embeds, ids, text_ids)
                     for u, c, m in zip(controls, conds, modes) if active(u, i, len(timesteps))]
        preds = [controlled_flux(transformer, latents, e, p, timestep, ids, text_ids, guidance, residuals,
                                 control_tokens=concat) for e, p in texts]
        pred = preds[0] if len(preds) == 1 else preds[1] + true_cfg_scale * (preds[0] - preds[1])
        latents = scheduler.step(pred, t, latents, return_dict=False)[0]
    if output_type == "latent":
        return latents
    image = vae.decode(unpack(latents, h, w) / vae.config.scaling_factor + vae_shift(vae), return_dict=False)[0]
    return VaeImageProcessor(vae_scale_factor=f * 2).postprocess(image, output_type=output_type)


def _control(unit, cond, mode, latents, timestep, embedded, embeds, pooled, ids, text_ids) -> DiTResiduals:
    cn = unit.controlnet
    guidance = embedded if cn.config.guidance_embeds else None
    return cn(latents, cond, timestep, pooled, embeds, ids, text_ids, guidance, mode, unit.scale)


def is_control_base(transformer) -> bool:
    """A FLUX.1 Control transformer: its input twice as wide as its output (latents ‖ control latent)."""
    out = transformer.config.out_channels
    return bool(out) and transformer.x_embedder.in_features == 2 * out


def _check(controls, transformer, control_image, width: int, height: int, vae) -> None:
    """Every input problem as one line, before any compute."""
    multiple = 2 * vae_scale_factor(vae)
    if width % multiple or height % multiple:
        raise InputError(f"width and height must be multiples of {multiple} for this base (got {width}×{height})")
    for k, u in enumerate(controls):
        if not isinstance(u.controlnet, FluxControlNet):
            raise InputError(f"ControlNet {k + 1} is not a Flux ControlNet: it was made for another base model")
        if u.controlnet.inner_dim != transformer.inner_dim:
            raise InputError(f"ControlNet {k + 1} is {u.controlnet.inner_dim} wide, the Flux base {transformer.inner_dim}: "
                             "it was made for another base model")
        hint = u.controlnet.input_hint_block
        if hint is not None and hint.downscale_factor != vae_scale_factor(vae):
            raise InputError(f"ControlNet {k + 1} (XLabs) encodes hints {hint.downscale_factor}× down, but this base's "
                             f"VAE scales by {vae_scale_factor(vae)}: it was made for another autoencoder")
        n = u.controlnet.config.num_mode
        if n is not None and not (u.mode is not None and 0 <= u.mode_index < n):
            raise InputError(f"ControlNet {k + 1} is a union net: give a control mode 0..{n - 1} or a name "
                             f"({', '.join(FLUX_UNION_MODES)}); got {u.mode!r}")
        if not 0 <= u.start < u.end <= 1:
            raise InputError(f"ControlNet {k + 1}: start and end must satisfy 0 ≤ start < end ≤ 1 (got {u.start}, {u.end})")
    concat = is_control_base(transformer)
    packed, takes = 4 * vae.config.latent_channels, transformer.x_embedder.in_features // (2 if concat else 1)
    if takes != packed:
        raise InputError(f"this Flux transformer takes {takes} packed latent channels{' (and as many of control latent)' if concat else ''} "
                         f"but the VAE gives {packed}: the transformer and the autoencoder are from different models")
    if concat != (control_image is not None):
        raise InputError("a FLUX.1 Control base needs control_image" if concat else
                         "control_image is for FLUX.1 Control bases; this base takes hints through ControlNets")


def encode_flux_prompt(tokenizer, text_encoder, tokenizer_2, text_encoder_2, prompts: list[str],
                       max_sequence_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 token states, CLIP pooled vector) as Flux takes them: CLIP padded to its own length,
    T5 to `max_sequence_length` (512 for dev, 256 for schnell); longer prompts are truncated. A base
    without T5 (`text_encoder_2` None: the small one-CLIP bases) reads the CLIP's last hidden states."""
    if not 1 <= max_sequence_length <= 512:
        raise InputError(f"max_sequence_length must be 1..512, got {max_sequence_length}")
    clip = truncating_ids(tokenizer, prompts, tokenizer.model_max_length, "CLIP")
    with torch.no_grad():
        out = text_encoder(clip.to(text_encoder.device), output_hidden_states=False)
        if text_encoder_2 is None:
            return out.last_hidden_state.to(text_encoder.dtype), out.pooler_output.to(text_encoder.dtype)
        t5 = truncating_ids(tokenizer_2, prompts, max_sequence_length, "T5 (max_sequence_length)")
        states = text_encoder_2(t5.to(text_encoder_2.device), output_hidden_states=False)[0]
    return states.to(text_encoder_2.dtype), out.pooler_output.to(text_encoder.dtype)


def vae_shift(vae) -> float:
    """The VAE's latent shift; 0 for autoencoders without one (SD's, the miniature model's)."""
    return vae.config.shift_factor or 0.0


@dataclass
class FluxBase(TransformerBase):
    """A Flux base model's components, loaded offline from a diffusers folder (`from_pretrained`)."""

    kind = "flux"
    described = "a Flux base model"

    transformer: object
    vae: object
    scheduler: object
    text_encoder: object
    tokenizer: object
    text_encoder_2: object = None  # T5; None for one-CLIP bases (see encode_flux_prompt)
    tokenizer_2: object = None

    def __call__(self, prompt: str | list[str], controls: list[FluxControl] = (), *, negative_prompt=None,
                 max_sequence_length: int = 512, **kwargs):
        """`sample_flux` from text; `negative_prompt` with `true_cfg_scale` > 1 for true CFG."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        encode = lambda p: encode_flux_prompt(self.tokenizer, self.text_encoder, self.tokenizer_2,  # noqa: E731
                                              self.text_encoder_2, p, max_sequence_length)
        embeds, pooled = encode(prompts)
        if negative_prompt is not None:
            negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
            kwargs["negative_prompt_embeds"], kwargs["negative_pooled_prompt_embeds"] = encode(negatives)
        return sample_flux(self.transformer, self.vae, self.scheduler, embeds, pooled, controls, **kwargs)
