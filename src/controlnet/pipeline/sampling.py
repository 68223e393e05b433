"""`ControlPipeline`: base model + ControlNet units + prompt -> images.

The loop is diffusers' (same scheduler calls, same CFG batch `[uncond; cond]`, same residual sum),
so balanced mode reproduces `StableDiffusion(XL)ControlNetPipeline` to float precision. It wastes
less: a unit outside its start/end window is not run at all (diffusers runs it and multiplies by
0), E(c) is computed once per image instead of once per step, and cond-only modes run the
ControlNet on the conditional half of the batch only.
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from controlnet.errors import InputError
from controlnet.nn import ControlResiduals, controlled_unet, family_of, unet_connection_shapes
from controlnet.pipeline import images as img
from controlnet.pipeline.loading import load_folder, load_single_file
from controlnet.pipeline.modes import active, cond_only, connection_levels, mode_scales
from controlnet.pipeline.schedulers import make_scheduler
from controlnet.pipeline.text import encode_sd, encode_sdxl
from controlnet.pipeline.units import ControlUnit

MAX_SEED = 2**32 - 1


@dataclass
class ControlPipelineOutput:
    """images: PIL list, (B, H, W, 3) array, (B, 3, H, W) tensor or latents, per `output_type`.
    seeds: the seed of each image (image k of seed s is image 0 of seed s + k).
    hints: per unit, the condition map exactly as fed to its ControlNet (PIL)."""

    images: Any
    seeds: list[int]
    hints: list[Any] = field(default_factory=list)
    latents: torch.Tensor | None = None


@dataclass
class _Prepared:
    """A unit made ready for the loop: hint embedded once, scales (with mask) resolved once."""

    unit: ControlUnit
    embedding: torch.Tensor | None
    scales: list
    cond_only: bool


def check_compatible(cn, unet, vae_scale_factor: int, label: str = "ControlNet") -> None:
    """Refuse a ControlNet made for another base family before sampling starts."""
    base = family_of(unet.config)
    mine = family_of(cn.config)
    keys = ("cross_attention_dim", "addition_embed_type", "block_out_channels", "layers_per_block", "in_channels")
    diff = [k for k in keys if _norm(cn.config.get(k)) != _norm(unet.config.get(k))]
    if diff or cn.num_connections != len(unet_connection_shapes(unet, (64, 64))):
        what = ", ".join(f"{k} {cn.config.get(k)} vs {unet.config.get(k)}" for k in diff)
        raise InputError(
            f"{label} was made for a {mine} base model but the base model is {base} ({what}); "
            f"use a ControlNet trained for {base}"
        )
    if cn.hint_downscale != vae_scale_factor:
        raise InputError(
            f"{label} expects hints {cn.hint_downscale}x the latent size but this base model's VAE scales by "
            f"{vae_scale_factor}; it was made for another autoencoder"
        )


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def _generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def _noise(shape, gens: list[torch.Generator], device, dtype) -> torch.Tensor:
    """Per-image noise drawn on the CPU, so a seed gives the same image on every device."""
    return torch.cat([torch.randn((1, *shape[1:]), generator=g, dtype=torch.float32) for g in gens]).to(device, dtype)


def _pad_uncond(res: ControlResiduals) -> ControlResiduals:
    """Cond-only residuals -> a full CFG batch with zeros for the uncond half."""
    return ControlResiduals(tuple(torch.cat([torch.zeros_like(d), d]) for d in res.down), torch.cat([torch.zeros_like(res.mid), res.mid]))


class ControlPipeline:
    """Stable Diffusion 1.x / 2.x / XL with any number of ControlNet units.

    Build from a folder or single file with `from_pretrained`, or from components (a diffusers
    pipeline's, for instance: `ControlPipeline.from_diffusers(pipe)`).
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, text_encoder_2=None, tokenizer_2=None,
                 *, force_zeros_for_empty_prompt: bool | None = None, kind: str | None = None):
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.kind = kind or ("sdxl" if unet.config.get("addition_embed_type") == "text_time" else "sd")
        if self.kind == "sdxl" and text_encoder_2 is None:
            raise InputError("an SDXL base model needs text_encoder_2 and tokenizer_2")
        self.force_zeros_for_empty_prompt = self.kind == "sdxl" if force_zeros_for_empty_prompt is None else force_zeros_for_empty_prompt
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        if unet.config.get("time_cond_proj_dim") is not None:
            raise InputError("U-Nets with a guidance embedding (LCM distilled) are not supported")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, config: str | os.PathLike | None = None, dtype=None,
                        device="cpu", variant: str | None = None) -> ControlPipeline:
        """A diffusers-layout folder, or a single-file checkpoint with `config=` a local folder of
        the same model's configs and tokenizers. Nothing is ever downloaded."""
        if os.path.isfile(path):
            parts = load_single_file(path, config=config, dtype=dtype, device=device)
        else:
            parts = load_folder(path, dtype=dtype, device=device, variant=variant)
        kind, zeros = parts.pop("kind"), parts.pop("force_zeros_for_empty_prompt")
        return cls(**parts, kind=kind, force_zeros_for_empty_prompt=zeros)

    @classmethod
    def from_diffusers(cls, pipe) -> ControlPipeline:
        """Share the components of a diffusers SD / SDXL pipeline (no copies)."""
        zeros = getattr(pipe.config, "force_zeros_for_empty_prompt", None)
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler,
                   getattr(pipe, "text_encoder_2", None), getattr(pipe, "tokenizer_2", None),
                   force_zeros_for_empty_prompt=zeros)

    def to(self, device=None, dtype=None) -> ControlPipeline:
        for m in (self.unet, self.vae, self.text_encoder, self.text_encoder_2):
            if m is not None:
                m.to(device=device, dtype=dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def family(self) -> str:
        return family_of(self.unet.config)

    # ------------------------------------------------------------------ pieces

    def encode_prompt(self, prompts: list[str], negatives: list[str], cfg: bool):
        """(text states, SDXL added_cond_kwargs or None) for the batch `[uncond; cond]` (cond only without CFG)."""
        if self.kind == "sd":
            cond = encode_sd(self.text_encoder, self.tokenizer, prompts)
            if not cfg:
                return cond, None
            return torch.cat([encode_sd(self.text_encoder, self.tokenizer, negatives), cond]), None
        encoders, tokenizers = (self.text_encoder, self.text_encoder_2), (self.tokenizer, self.tokenizer_2)
        cond, pooled = encode_sdxl(encoders, tokenizers, prompts)
        if cfg:
            if self.force_zeros_for_empty_prompt and all(n == "" for n in negatives):
                # diffusers' SDXL default: no negative prompt -> zero embeddings, not the embedding of ""
                neg, neg_pooled = torch.zeros_like(cond), torch.zeros_like(pooled)
            else:
                neg, neg_pooled = encode_sdxl(encoders, tokenizers, negatives)
            cond, pooled = torch.cat([neg, cond]), torch.cat([neg_pooled, pooled])
        return cond, {"text_embeds": pooled}

    def _time_ids(self, height: int, width: int, batch: int, pooled_dim: int, dtype) -> torch.Tensor:
        """SDXL's micro-conditioning: original size, crop (0, 0), target size."""
        ids = [height, width, 0, 0, height, width]
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * len(ids) + pooled_dim != expected:
            raise InputError("the SDXL U-Net's added embedding does not match text_encoder_2's projection size")
        return torch.tensor([ids], dtype=dtype, device=self.device).repeat(batch, 1)

    @torch.no_grad()
    def prepare_unit(self, unit: ControlUnit, width: int, height: int, batch: int, index: int) -> tuple[_Prepared, list]:
        """Hint(s) -> E(c) once; mode + weight (+ mask per resolution) -> per-connection scales."""
        cn, label = unit.controlnet, unit.name or f"unit {index + 1}"
        check_compatible(cn, self.unet, self.vae_scale_factor, label)
        pictures = unit.image if isinstance(unit.image, (list, tuple)) else [unit.image]
        if len(pictures) not in (1, batch):
            raise InputError(f"{label}: give one condition image or one per image ({batch}), got {len(pictures)}")
        hints = [img.hint_tensor(p, width, height, unit.resize) for p in pictures]
        hint = torch.cat(hints).to(cn.device, cn.dtype)
        if cn.config.get("conditioning_channels", 3) != 3:
            hint = hint[:, : cn.config.conditioning_channels]
        embedding = None if unit.off else cn.embed_hint(hint)  # an off unit costs nothing
        n = cn.num_connections
        if unit.layer_scales is not None:
            if len(unit.layer_scales) != n:
                raise InputError(f"{label}: layer_scales has {len(unit.layer_scales)} values; this ControlNet has {n} connections")
            scales = [unit.weight * s for s in unit.layer_scales]
        else:
            scales = mode_scales(unit.mode, unit.weight, connection_levels(self.unet))
        if unit.mask is not None:
            mask = img.mask_tensor(unit.mask, width, height).to(self.device, self.unet.dtype)
            shapes = unet_connection_shapes(self.unet, (height // self.vae_scale_factor, width // self.vae_scale_factor))
            scales = [s * F.adaptive_avg_pool2d(mask, (h, w)) for s, (_, h, w) in zip(scales, shapes)]
        # shuffle-type (global pooling) models act on the cond branch only, as in A1111 and diffusers
        only = cond_only(unit.mode) or bool(cn.config.get("global_pool_conditions", False))
        return _Prepared(unit, embedding, scales, only), [img.to_pil(h) for h in hints]

    def _size(self, units: Sequence[ControlUnit], init_image, width, height) -> tuple[int, int]:
        f = self.vae_scale_factor
        for name, v in (("width", width), ("height", height)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 or v % f):
                raise InputError(f"{name} must be a positive multiple of {f} (the VAE's scale factor), got {v!r}")
        if width is not None and height is not None:
            return int(width), int(height)
        first = next((u.image for u in units), init_image)
        if isinstance(first, (list, tuple)):
            first = first[0]
        if first is None:
            side = int(self.unet.config.sample_size) * f
            w0, h0 = width or side, height or side
        else:
            w0, h0 = img.image_size(first)
            if width is not None:
                h0 = h0 * width / w0
                w0 = width
            elif height is not None:
                w0 = w0 * height / h0
                h0 = height
        # round down to the latent grid, as diffusers does for its default size
        w, h = int(w0) // f * f, int(h0) // f * f
        if w == 0 or h == 0:
            raise InputError(f"the output would be {w}x{h}; give width and height (multiples of {f})")
        return w, h

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], (B, 3, H, W)."""
        vae = self.vae
        upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
        dtype = torch.float32 if upcast else vae.dtype
        if upcast:
            vae.to(torch.float32)
        z = latents.to(dtype)
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=z.device, dtype=dtype).view(1, -1, 1, 1)
            std = torch.tensor(std, device=z.device, dtype=dtype).view(1, -1, 1, 1)
            z = z * std / vae.config.scaling_factor + mean
        else:
            z = z / vae.config.scaling_factor
        x = vae.decode(z, return_dict=False)[0]
        if upcast:
            vae.to(torch.float16)
        return (x.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_image(self, image, width: int, height: int) -> torch.Tensor:
        """img2img: image -> scaled latent (the posterior mean: deterministic, no seed consumed)."""
        x = torch.from_numpy(img.fit(img.to_rgb(image), (width, height), "crop_and_resize")).permute(2, 0, 1)[None]
        x = (2 * x - 1).to(self.device, self.vae.dtype)
        z = self.vae.encode(x).latent_dist.mean
        mean, std = getattr(self.vae.config, "latents_mean", None), getattr(self.vae.config, "latents_std", None)
        if mean is not None and std is not None:
            mean = torch.tensor(mean, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
            std = torch.tensor(std, device=z.device, dtype=z.dtype).view(1, -1, 1, 1)
            return (z - mean) * self.vae.config.scaling_factor / std
        return z * self.vae.config.scaling_factor

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] = "",
        units: Sequence[ControlUnit] | ControlUnit = (),
        negative_prompt: str | list[str] = "",
        steps: int = 20,
        guidance_scale: float = 9.0,
        scheduler="ddim",
        eta: float = 0.0,
        seed: int | None = None,
        num_images: int = 1,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        *,
        init_image=None,
        strength: float = 0.75,
        callback: Callable[[int, Any, torch.Tensor], torch.Tensor | None] | None = None,
        progress: bool = True,
    ) -> ControlPipelineOutput:
        """Sample `num_images` images.

        units: ControlUnits, their residuals summed (paper §3.4). guidance_scale <= 1 turns CFG off.
        scheduler: a name (`controlnet.pipeline.schedulers.scheduler_names()`) or a diffusers scheduler.
        seed: image k uses seed + k, drawn on the CPU; None picks a random seed (reported in `seeds`).
        latents: start from these instead of seeded noise (txt2img; the noise for img2img).
        init_image, strength: img2img; only the last `strength` of the schedule is run.
        callback(step, t, latents) runs after each step; a tensor it returns replaces the latents.
        output_type: "pil", "np", "pt" or "latent".
        """
        units = [units] if isinstance(units, ControlUnit) else list(units)
        if not all(isinstance(u, ControlUnit) for u in units):
            raise InputError("units must be ControlUnit objects")
        prompts = [prompt] * num_images if isinstance(prompt, str) else list(prompt)
        if not isinstance(prompt, str) and num_images == 1:
            num_images = len(prompts)  # a list of prompts is a batch of that many images
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1 or len(prompts) != num_images:
            raise InputError(f"num_images must be a positive integer matching the prompts, got {num_images!r} for {len(prompts)} prompt(s)")
        negatives = [negative_prompt] * num_images if isinstance(negative_prompt, str) else list(negative_prompt)
        if len(negatives) != num_images:
            raise InputError("give one negative prompt or one per image")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise InputError(f"steps must be a positive integer, got {steps!r}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise InputError(f"output_type must be pil, np, pt or latent, got {output_type!r}")
        if init_image is not None and not 0.0 < strength <= 1.0:
            raise InputError(f"strength must be in (0, 1], got {strength}")
        width, height = self._size(units, init_image, width, height)
        batch, device, dtype = num_images, self.device, self.unet.dtype
        cfg = guidance_scale > 1.0

        if seed is None:
            seed = random.randint(0, MAX_SEED - batch)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED - batch + 1:
            raise InputError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
        seeds = [int(seed) + k for k in range(batch)]
        gens = _generators(seeds)

        prepared, hints = [], []
        for k, u in enumerate(units):
            p, pictures = self.prepare_unit(u, width, height, batch, k)
            hints.append(pictures)
            if not u.off:
                prepared.append(p)

        text, added = self.encode_prompt(prompts, negatives, cfg)
        text = text.to(device, dtype)
        if added is not None:
            added["text_embeds"] = added["text_embeds"].to(device, dtype)
            added["time_ids"] = self._time_ids(height, width, text.shape[0], added["text_embeds"].shape[-1], dtype)
        added_cond = {k: v[batch:] for k, v in added.items()} if (added is not None and cfg) else added

        sched = make_scheduler(scheduler, self.scheduler)
        sched.set_timesteps(steps, device=device)
        timesteps = sched.timesteps
        shape = (batch, self.unet.config.in_channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is not None and tuple(latents.shape) != shape:
            raise InputError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        noise = latents.to(device, dtype) if latents is not None else _noise(shape, gens, device, dtype)
        if init_image is None:
            x = noise * sched.init_noise_sigma
        else:
            keep = min(int(steps * strength), steps)
            begin = (steps - keep) * sched.order
            timesteps = timesteps[begin:]
            if len(timesteps) == 0:
                raise InputError(f"strength {strength} with {steps} steps leaves no step to run; raise either")
            if hasattr(sched, "set_begin_index"):
                sched.set_begin_index(begin)
            x0 = self.encode_image(init_image, width, height).to(device, dtype)
            x = sched.add_noise(x0.expand(batch, -1, -1, -1), noise, timesteps[:1].repeat(batch))

        step_kwargs = {}
        params = inspect.signature(sched.step).parameters
        if "eta" in params:
            step_kwargs["eta"] = eta
        if "generator" in params:
            step_kwargs["generator"] = gens

        n = len(timesteps)
        for i, t in enumerate(tqdm(timesteps, disable=not progress, desc="sampling", leave=False)):
            x_in = sched.scale_model_input(torch.cat([x, x]) if cfg else x, t)
            controls = []
            for p in prepared:
                if not active(i, n, p.unit.start, p.unit.end):
                    continue  # not run at all outside its window
                cn = p.unit.controlnet
                if p.cond_only and cfg:
                    res = cn(x_in[batch:].to(cn.dtype), t, text[batch:].to(cn.dtype), hint_embedding=p.embedding,
                             added_cond_kwargs=added_cond)
                    controls.append((_pad_uncond(res.scaled(p.scales)), None))
                else:
                    res = cn(x_in.to(cn.dtype), t, text.to(cn.dtype), hint_embedding=p.embedding, added_cond_kwargs=added)
                    controls.append((res, p.scales))
            eps = controlled_unet(self.unet, x_in, t, text, controls, added_cond_kwargs=added)
            if cfg:
                uncond, cond = eps.chunk(2)
                eps = uncond + guidance_scale * (cond - uncond)
            x = sched.step(eps, t, x, **step_kwargs, return_dict=False)[0]
            if callback is not None:
                replaced = callback(i, t, x)
                if torch.is_tensor(replaced):
                    x = replaced

        if output_type == "latent":
            return ControlPipelineOutput(x, seeds, hints, x)
        pixels = self.decode(x)
        if output_type == "pt":
            out = pixels
        else:
            arr = pixels.permute(0, 2, 3, 1).cpu().numpy()
            out = arr if output_type == "np" else [img.to_pil(a) for a in arr]
        return ControlPipelineOutput(out, seeds, hints, x)
