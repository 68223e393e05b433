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

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from controlnet import checks
from controlnet.errors import InputError, NonFiniteError
from controlnet.nn import ControlResiduals, controlled_unet, family_of, lllite, unet_connection_shapes
from controlnet.nn import t2i_adapter as t2i
from controlnet.nn.controlled_unet import controlled_unet_xs
from controlnet.nn.controlnet_xs import is_xs
from controlnet.nn.deep_cache import shallow_control, shallow_count, shallow_unet
from controlnet.nn.dit_controlnet import refuse_on_unet
from controlnet.pipeline import images as img
from controlnet.pipeline import inpaint as inp
from controlnet.pipeline.loading import load_folder, load_single_file
from controlnet.pipeline.modes import active, cond_only, connection_levels, mode_scales
from controlnet.pipeline.prompts import check_prompt
from controlnet.pipeline.reuse import Approximation, DeepFeatures, ResidualCache, approximation
from controlnet.pipeline.schedulers import make_scheduler
from controlnet.pipeline.text import encode_prompts
from controlnet.pipeline.units import ControlUnit

MAX_SEED = 2**32 - 1
MAX_SIDE = 16384  # pixels: far above any model's training size; beyond it memory runs out, not quality up
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


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
    dtype: Any = None  # the ControlNet's, read once: a diffusers model's `.dtype` walks all its modules on every read


@dataclass
class _Call:
    """One call's arguments, checked and normalised by `_check_call_args` before any work starts."""

    prompts: list[str]
    negatives: list[str]
    guidance_scale: float
    eta: float
    seeds: list[int]
    width: int
    height: int
    scheduler: Any  # a fresh diffusers scheduler, its timesteps set
    timesteps: torch.Tensor  # the ones to run (img2img: the last `strength` of the schedule)
    output_type: str
    latents: torch.Tensor | None
    init_image: Any
    callback: Callable | None
    progress: bool
    inpaint: inp.Inpaint | None = None  # inpainting / outpainting (`controlnet.pipeline.inpaint`)
    approx: Approximation = field(default_factory=Approximation)  # approximate modes (`controlnet.pipeline.reuse`)

    @property
    def batch(self) -> int:
        return len(self.prompts)

    @property
    def guided(self) -> bool:
        """Classifier-free guidance on: the U-Net batch is `[uncond; cond]`."""
        return self.guidance_scale > 1.0


@dataclass
class _Text:
    """Text conditioning of the U-Net batch, and SDXL's added embeddings for it and its cond half."""

    states: torch.Tensor
    added: dict | None
    cond_added: dict | None


def _latent_stats(vae, like: torch.Tensor):
    """Per-channel (mean, std) of an autoencoder that declares them (SDXL-type VAEs), else None."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    return tuple(torch.tensor(v, device=like.device, dtype=like.dtype).view(1, -1, 1, 1) for v in (mean, std))


def normalize_latents(vae, z: torch.Tensor) -> torch.Tensor:
    """VAE latent -> the diffusion model's latent: (z - mean) * scaling_factor / std."""
    stats = _latent_stats(vae, z)
    if stats is None:
        return z * vae.config.scaling_factor
    mean, std = stats
    return (z - mean) * vae.config.scaling_factor / std


def denormalize_latents(vae, x: torch.Tensor) -> torch.Tensor:
    """The inverse of `normalize_latents`: diffusion latent -> what the VAE decodes."""
    stats = _latent_stats(vae, x)
    if stats is None:
        return x / vae.config.scaling_factor
    mean, std = stats
    return x * std / vae.config.scaling_factor + mean


def _strings(name: str, value) -> list[str]:
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise InputError(f"{name} must be a string or a non-empty list of strings, got {value!r:.80}")


def _prompts(prompt, negative_prompt, num_images) -> tuple[list[str], list[str]]:
    """One prompt repeated `num_images` times, or a list of prompts (a batch of that many images)."""
    num_images = checks.positive_int("num_images", num_images)
    if isinstance(prompt, str):
        prompts = [prompt] * num_images
    else:
        prompts = _strings("prompt", prompt)
        if num_images not in (1, len(prompts)):
            raise InputError(f"num_images is {num_images} but {len(prompts)} prompts were given; give one prompt or one per image")
    negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else _strings("negative_prompt", negative_prompt)
    if len(negatives) != len(prompts):
        raise InputError(f"give one negative prompt or one per image ({len(prompts)}), got {len(negatives)}")
    for name, texts in (("prompt", prompts), ("negative_prompt", negatives)):
        for text in dict.fromkeys(texts):  # each distinct one once
            check_prompt(text, name)
    return prompts, negatives


def seed_at(seed: int, k: int) -> int:
    """Image k's seed: seed + k, wrapping past MAX_SEED to 0 (seeds are unsigned 32-bit, as A1111's)."""
    return (seed + k) % (MAX_SEED + 1)


def _seeds(seed, batch: int) -> list[int]:
    """Image k uses seed_at(seed, k); None picks a random first seed."""
    if seed is None:
        seed = random.randint(0, MAX_SEED)
    seed = checks.integer("seed", seed, lo=0, hi=MAX_SEED)
    return [seed_at(seed, k) for k in range(batch)]


def _check_latents(latents, shape: tuple) -> None:
    if latents is None:
        return
    if not torch.is_tensor(latents) or tuple(latents.shape) != shape:
        raise InputError(f"latents must be a tensor of shape {shape}, got {getattr(latents, 'shape', type(latents).__name__)}")
    if not torch.isfinite(latents).all():
        raise InputError("latents contain NaN or infinite values")


def _check_finite(x: torch.Tensor, what: str, dtype, guidance_scale: float) -> None:
    """Refuse a result holding NaN or infinity (it would be saved as a black picture), naming the likely causes."""
    if torch.isfinite(x).all():
        return
    causes = ["float16 overflow (run in fp32 or bf16: --dtype / dtype=)"] if dtype == torch.float16 else []
    causes += [f"weights too large for this model (control weights, schedule factors, prompt weights; CFG scale "
               f"{guidance_scale:g})", "a checkpoint holding NaN weights"]
    raise NonFiniteError(f"sampling went numerically wrong: {what} hold NaN or infinite values, so no picture is saved; "
                         f"likely causes: {'; or '.join(causes)}")


def _unit_list(units) -> list[ControlUnit]:
    units = [units] if isinstance(units, ControlUnit) else units
    if isinstance(units, (str, bytes)) or not isinstance(units, Sequence) or not all(isinstance(u, ControlUnit) for u in units):
        raise InputError("units must be a ControlUnit or a list of ControlUnit objects")
    return list(units)


def _check_mask_shape(mask_wh: tuple[int, int], width: int, height: int, label: str) -> None:
    """A mask is resized to the output; one of another shape would be stretched out of register."""
    mw, mh = mask_wh
    if abs(mw * height / (mh * width) - 1.0) > 0.01:
        raise InputError(f"{label}: the mask is {mw}×{mh} but the output is {width}×{height}; give a mask of the "
                         "output's shape (it is resized to the output, so another shape would be distorted)")


def _step_kwargs(sched, eta: float, gens: list[torch.Generator]) -> dict:
    params = inspect.signature(sched.step).parameters
    kwargs: dict = {}
    if "eta" in params:
        kwargs["eta"] = eta
    if "generator" in params:
        kwargs["generator"] = gens
    return kwargs


def check_compatible(cn, unet, vae_scale_factor: int, label: str = "ControlNet") -> None:
    """Refuse a ControlNet made for another base family before sampling starts."""
    base = family_of(unet.config)
    refuse_on_unet(cn, label, base)
    mine = family_of(cn.config)
    keys = ("cross_attention_dim", "addition_embed_type", "block_out_channels", "layers_per_block", "in_channels")
    diff = [k for k in keys if _norm(cn.config.get(k)) != _norm(unet.config.get(k))]
    if diff == ["in_channels"] and unet.config.in_channels == 2 * cn.config.get("in_channels", 4) + 1:
        diff = []  # a 9-channel inpainting U-Net: its ControlNets read the 4-channel latents
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


def _unstack(tensors: tuple) -> tuple:
    """(down..., mid) -> (down, mid), as ControlResiduals takes them."""
    return tensors[:-1], tensors[-1]


def _both_halves(tensors, zero_uncond: bool) -> tuple:
    """Cond-half tensors -> a full CFG batch: zeros for the uncond half (cond-only modes), or the same
    values on both halves (`control_cond_only`, an approximation of the unit acting on both)."""
    return tuple(torch.cat([torch.zeros_like(d) if zero_uncond else d, d]) for d in tensors)


class ControlPipeline:
    """Stable Diffusion 1.x / 2.x / XL with any number of ControlNet units.

    Build from a folder or single file with `from_pretrained`, or from components (a diffusers
    pipeline's, for instance: `ControlPipeline.from_diffusers(pipe)`).
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler, text_encoder_2=None, tokenizer_2=None,
                 *, force_zeros_for_empty_prompt: bool | None = None, kind: str | None = None, compile: bool = False):
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
        self.compiled, self._decode_upcast = None, False  # decode: see `decode`
        if compile:
            self.enable_compile()

    def enable_compile(self, mode: str | None = None, backend="inductor") -> ControlPipeline:
        """torch.compile the U-Net and the ControlNets (`controlnet.pipeline.compiled`); call it after
        moving the pipeline to its device. mode None: "reduce-overhead" (CUDA graphs) on CUDA."""
        from controlnet.pipeline.compiled import CompiledModels

        self.compiled = CompiledModels(self.unet, backend=backend, mode=mode)
        return self

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, config: str | os.PathLike | None = None, dtype=None,
                        device="cpu", variant: str | None = None) -> ControlPipeline:
        """A diffusers-layout folder, or a single-file checkpoint with `config=` a local folder of
        the same model's configs and tokenizers. Nothing is ever downloaded."""
        if os.path.isfile(path):
            if variant is not None:
                raise InputError(f"variant= picks weight files in a diffusers folder; {path} is a single file")
            parts = load_single_file(path, config=config, dtype=dtype, device=device)
        else:
            if config is not None and os.path.isdir(path):
                raise InputError(f"config (--config) is for a single-file --model; {path} is a folder that carries its own "
                                 "configs: leave --config out")
            parts = load_folder(path, dtype=dtype, device=device, variant=variant)
        kind, zeros = parts.pop("kind"), parts.pop("force_zeros_for_empty_prompt")
        if kind in ("flux", "sd3"):
            raise InputError(f"{path} is a{' Flux' if kind == 'flux' else 'n SD3'} base model: sample it with "
                             f"controlnet.pipeline.{kind}.{'FluxBase' if kind == 'flux' else 'SD3Base'} "
                             "(the U-Net pipeline and its commands do not take transformer bases yet)")
        return cls(**parts, kind=kind, force_zeros_for_empty_prompt=zeros)

    @classmethod
    def from_diffusers(cls, pipe) -> ControlPipeline:
        """Share the components of a diffusers SD / SDXL pipeline (no copies)."""
        missing = [a for a in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if getattr(pipe, a, None) is None]
        if missing:
            raise InputError(f"ControlPipeline.from_diffusers takes a diffusers StableDiffusion(XL)Pipeline; the "
                             f"{type(pipe).__name__} given has no {', '.join(missing)} (a folder on disk: use from_pretrained)")
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

    def encode_prompt(self, prompts: list[str], negatives: list[str], guided: bool):
        """(text states, SDXL added_cond_kwargs or None) for the batch `[uncond; cond]` (cond only when not guided).
        Long and weighted prompts: `controlnet.pipeline.text` (compel)."""
        if self.kind == "sd":
            return encode_prompts([self.text_encoder], [self.tokenizer], prompts, negatives, guided)
        return encode_prompts([self.text_encoder, self.text_encoder_2], [self.tokenizer, self.tokenizer_2], prompts, negatives,
                              guided, zero_empty_negative=bool(self.force_zeros_for_empty_prompt))

    def _time_ids(self, height: int, width: int, batch: int, pooled_dim: int, dtype) -> torch.Tensor:
        """SDXL's micro-conditioning: original size, crop (0, 0), target size."""
        ids = [height, width, 0, 0, height, width]
        expected = self.unet.add_embedding.linear_1.in_features
        if self.unet.config.addition_time_embed_dim * len(ids) + pooled_dim != expected:
            raise InputError("the SDXL U-Net's added embedding does not match text_encoder_2's projection size")
        return torch.tensor([ids], dtype=dtype, device=self.device).repeat(batch, 1)

    @torch.no_grad()
    def prepare_unit(self, unit: ControlUnit, width: int, height: int, batch: int, index: int) -> tuple[_Prepared, list]:
        """Hint(s) -> E(c) once; mode + weight (+ mask per resolution) -> per-connection scales.
        The ControlNet runs in the U-Net's dtype and device unless the unit names a dtype."""
        cn, label = unit.controlnet, unit.name or f"unit {index + 1}"
        if t2i.is_adapter(cn) or is_xs(cn) or lllite.is_lllite(cn):
            return self._prepare_adapter(unit, width, height, batch, label)
        check_compatible(cn, self.unet, self.vae_scale_factor, label)
        if not unit.off:
            wanted = unit.dtype or self.unet.dtype
            if cn.dtype != wanted or cn.device != self.device:
                cn.to(device=self.device, dtype=wanted)
        if unit.union_conditions:  # a union ControlNet: every condition in one pass
            conditions = unit.union_conditions
            read = [self._hint(cn, c.image, width, height, unit.resize, batch, label) for c in conditions]
            # an inpaint map's -1 (masked) pixels are 0 for the union: xinsir's repaint hint is black there
            embedding = None if unit.off else cn.embed_conditions(
                [h.clamp(min=0) for h, _ in read], [c.control_type for c in conditions], [c.scale for c in conditions])
            hints = [p for _, pictures in read for p in pictures]
        else:
            hint, hints = self._hint(cn, unit.image, width, height, unit.resize, batch, label)
            embedding = None if unit.off else cn.embed_hint(hint)  # an off unit costs nothing
        # shuffle-type (global pooling) models act on the cond branch only, as in A1111 and diffusers
        only = cond_only(unit.mode) or bool(cn.config.get("global_pool_conditions", False))
        return _Prepared(unit, embedding, self._unit_scales(unit, width, height, label), only, cn.dtype), hints

    def _hint(self, cn, image, width: int, height: int, resize, batch: int, label: str) -> tuple[torch.Tensor, list]:
        """(hint tensor on the ControlNet's device and dtype, the hints as PIL) of one image or one per image."""
        pictures = image if isinstance(image, (list, tuple)) else [image]
        if len(pictures) not in (1, batch):
            raise InputError(f"{label}: give one condition image or one per image ({batch}), got {len(pictures)}")
        hints = [img.hint_tensor(p, width, height, resize) for p in pictures]
        hint = torch.cat(hints).to(cn.device, cn.dtype)
        if cn.config.get("conditioning_channels", 3) != 3:
            hint = hint[:, : cn.config.conditioning_channels]
        return hint, [img.to_pil(h) for h in hints]

    def _prepare_adapter(self, unit: ControlUnit, width: int, height: int, batch: int, label: str) -> tuple[_Prepared, list]:
        """A T2I-Adapter unit (its features computed once, checked against this U-Net) or a ControlNet-XS
        unit (its hint, and the coupled U-Net built once); the scale is the weight."""
        net = unit.controlnet
        kind = "ControlNet-XS" if is_xs(net) else "ControlNet-LLLite" if lllite.is_lllite(net) else "T2I-Adapter"
        if unit.mode != "balanced" or unit.layer_scales is not None or unit.mask is not None:
            raise InputError(f"{label}: a {kind} takes a weight, start/end and a schedule; not a mode, layer_scales or mask")
        wanted = unit.dtype or self.unet.dtype
        if net.dtype != wanted or net.device != self.device:
            net.to(device=self.device, dtype=wanted)
        pictures = unit.image if isinstance(unit.image, (list, tuple)) else [unit.image]
        if len(pictures) not in (1, batch):
            raise InputError(f"{label}: give one condition image or one per image ({batch}), got {len(pictures)}")
        hints = [img.hint_tensor(p, width, height, unit.resize) for p in pictures]
        if is_xs(net):
            try:
                net.coupled(self.unet)
            except ValueError as exc:
                raise InputError(f"{label}: {exc}") from None
            return _Prepared(unit, net.embed_hint(torch.cat(hints).to(self.device)), [unit.weight], False), [img.to_pil(h) for h in hints]
        if lllite.is_lllite(net):
            try:
                lllite.targets(net, self.unet)
            except ValueError as exc:
                raise InputError(f"{label}: {exc}") from None
            embeddings = net.embed_hint(torch.cat(hints).to(net.device, net.dtype))
            return _Prepared(unit, embeddings, [unit.weight], False), [img.to_pil(h) for h in hints]
        features = net.embed_hint(torch.cat(hints).to(net.device, net.dtype)[:, : net.hint_channels])
        try:
            t2i.check_features(features, self.unet.config, (height // self.vae_scale_factor, width // self.vae_scale_factor),
                               net.made_for)
        except ValueError as exc:
            raise InputError(f"{label}: {exc}") from None
        return _Prepared(unit, features, [unit.weight], False), [img.to_pil(h) for h in hints]

    def _unit_scales(self, unit: ControlUnit, width: int, height: int, label: str) -> list:
        """weight x (the mode's or the unit's own) per-connection scales, times the mask pooled to each resolution."""
        n = unit.controlnet.num_connections
        if unit.layer_scales is not None:
            if len(unit.layer_scales) != n:
                raise InputError(f"{label}: layer_scales has {len(unit.layer_scales)} values; this ControlNet has {n} connections")
            scales = [unit.residual_weight * s for s in unit.layer_scales]
        else:
            scales = mode_scales(unit.mode, unit.residual_weight, connection_levels(self.unet))
        if unit.mask is None:
            return scales
        mask = img.mask_rgb(unit.mask)  # transparent = 0: the mask rule of controlnet.images
        _check_mask_shape((mask.shape[1], mask.shape[0]), width, height, label)
        mask = img.mask_tensor(mask, width, height).to(self.device, self.unet.dtype)
        shapes = unet_connection_shapes(self.unet, (height // self.vae_scale_factor, width // self.vae_scale_factor))
        return [s * F.adaptive_avg_pool2d(mask, (h, w)) for s, (_, h, w) in zip(scales, shapes)]

    def _size(self, units: Sequence[ControlUnit], init_image, width, height) -> tuple[int, int]:
        """The output size: as given, else from the first condition image (or init image), else the
        model's default; rounded down to the latent grid, as diffusers does for its default size."""
        f = self.vae_scale_factor
        for name, v in (("width", width), ("height", height)):
            if v is not None and (checks.integer(name, v) % f or not 0 < v <= MAX_SIDE):
                raise InputError(f"{name} must be a positive multiple of {f} (the VAE's scale factor), at most "
                                 f"{MAX_SIDE}, got {v!r}")
        if width is not None and height is not None:
            return int(width), int(height)
        first = next((u.union_conditions[0].image if u.image is None else u.image for u in units), init_image)
        first = first[0] if isinstance(first, (list, tuple)) else first
        if first is None:
            side = int(self.unet.config.sample_size) * f
            w0, h0 = width or side, height or side
        else:
            w0, h0 = img.image_size(first)
            if width is not None:
                w0, h0 = width, h0 * width / w0
            elif height is not None:
                w0, h0 = w0 * height / h0, height
        w, h = int(w0) // f * f, int(h0) // f * f
        if not (0 < w <= MAX_SIDE and 0 < h <= MAX_SIDE):
            raise InputError(f"the output would be {w}x{h}; give width and height (multiples of {f}, at most {MAX_SIDE})")
        return w, h

    def _schedule(self, scheduler, steps, strength, img2img: bool):
        """A fresh scheduler with its timesteps; img2img keeps the last `strength` of them."""
        sched = make_scheduler(scheduler, self.scheduler)
        steps = checks.integer("steps", steps, lo=1, hi=int(getattr(sched.config, "num_train_timesteps", 1000)))
        strength = checks.number("strength", strength, lo=0.0, hi=1.0, lo_open=True)
        sched.set_timesteps(steps, device=self.device)
        if not img2img:
            return sched, sched.timesteps
        keep = min(int(steps * strength), steps)
        begin = (steps - keep) * sched.order
        timesteps = sched.timesteps[begin:]
        if len(timesteps) == 0:
            raise InputError(f"strength {strength} with {steps} steps leaves no step to run; raise either")
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
        return sched, timesteps

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1], (B, 3, H, W), decoded in the VAE's dtype. An fp16 decode that
        overflows (NaN or inf: SDXL's VAE does) is redone in fp32 (A1111's rule; diffusers upcasts
        such VAEs up front by their `force_upcast` flag, which most VAE configs carry by default), and
        this pipeline's later decodes go to fp32 directly."""
        vae = self.vae
        upcast = vae.dtype == torch.float16 and self._decode_upcast
        x = None if upcast else vae.decode(denormalize_latents(vae, latents.to(vae.dtype)), return_dict=False)[0]
        if x is None or (vae.dtype == torch.float16 and not torch.isfinite(x).all()):
            self._decode_upcast = True
            vae.to(torch.float32)
            try:
                x = vae.decode(denormalize_latents(vae, latents.float()), return_dict=False)[0]
            finally:
                vae.to(torch.float16)
        return (x.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def encode_image(self, image, width: int, height: int) -> torch.Tensor:
        """img2img: image -> scaled latent (the posterior mean: deterministic, no seed consumed)."""
        x = torch.from_numpy(img.fit(img.to_rgb(image), (width, height), "crop_and_resize")).permute(2, 0, 1)[None]
        x = (2 * x - 1).to(self.device, self.vae.dtype)
        return normalize_latents(self.vae, self.vae.encode(x).latent_dist.mean)

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
        strength: float | None = None,
        mask_image=None,
        inpaint_mode: str = "blend",
        mask_blur: float | None = None,
        init_resize: str | None = "crop_and_resize",
        callback: Callable[[int, Any, torch.Tensor], torch.Tensor | None] | None = None,
        progress: bool = True,
        approx: Approximation | None = None,
    ) -> ControlPipelineOutput:
        """Sample `num_images` images.

        units: ControlUnits, their residuals summed (paper §3.4). guidance_scale <= 1 turns CFG off.
        scheduler: a name (`controlnet.pipeline.schedulers.scheduler_names()`) or a diffusers scheduler.
        eta: DDIM's noise, in [0, 1]. seed: image k uses seed + k, drawn on the CPU; None picks a
        random seed (reported in `seeds`).
        latents: start from these instead of seeded noise (txt2img; the noise for img2img).
        init_image, strength: img2img; only the last `strength` (default 0.75) of the schedule is run.
        mask_image: inpainting (white = repaint, binary, init_image's size); strength defaults to 1 (pure
        noise). inpaint_mode: "blend" (diffusers) or "inpaint_only" (A1111). mask_blur: None (diffusers),
        or paste the result onto the original through the mask blurred with this sigma (0: hard).
        init_resize: how init_image (and its mask) is fitted; "resize_and_fill" outpaints the border.
        callback(step, t, latents) runs after each step; a tensor it returns replaces the latents.
        output_type: "pil", "np", "pt" or "latent".
        approx: approximate modes that skip work (`controlnet.pipeline.reuse.Approximation`; None: exact).
        """
        units = _unit_list(units)
        call = self._check_call_args(units, prompt, negative_prompt, num_images, steps, guidance_scale, eta, seed,
                                     width, height, latents, output_type, init_image, strength, scheduler,
                                     callback, progress, (mask_image, inpaint_mode, mask_blur, init_resize))
        call.approx = approximation(approx)
        prepared, hints = [], []
        for k, unit in enumerate(units):
            ready, pictures = self.prepare_unit(unit, call.width, call.height, call.batch, k)
            hints.append(pictures)
            if not unit.off:
                prepared.append(ready)
        text = self._encode_text(call)
        gens = _generators(call.seeds)
        x = self._denoise(call, self._initial_latents(call, gens), gens, prepared, text)
        return self._output(call, x, hints)

    def _check_call_args(self, units, prompt, negative_prompt, num_images, steps, guidance_scale, eta, seed, width,
                         height, latents, output_type, init_image, strength, scheduler, callback, progress,
                         inpainting=(None, "blend", None, "crop_and_resize")) -> _Call:
        """Every argument of a call checked before any work, so a bad value costs nothing."""
        prompts, negatives = _prompts(prompt, negative_prompt, num_images)
        guidance_scale = checks.number("guidance_scale (the CFG scale)", guidance_scale, lo=0.0, hi=checks.MAX_GUIDANCE)
        eta = checks.number("eta", eta, lo=0.0, hi=1.0)
        checks.choice("output_type", output_type, OUTPUT_TYPES)
        if callback is not None and not callable(callback):
            raise InputError(f"callback must be callable, got {type(callback).__name__}")
        width, height = self._size(units, init_image, width, height)
        spec, init_image = inp.check(init_image, *inpainting, (width, height), inp.nine_channel(self.unet, self.vae))
        strength = (1.0 if spec else 0.75) if strength is None else strength
        sched, timesteps = self._schedule(scheduler, steps, strength, init_image is not None)
        if spec:
            spec.strength = strength
        f = self.vae_scale_factor
        _check_latents(latents, (len(prompts), self.vae.config.latent_channels, height // f, width // f))
        return _Call(prompts, negatives, guidance_scale, eta, _seeds(seed, len(prompts)), width, height, sched,
                     timesteps, output_type, latents, init_image, callback, bool(progress), spec)

    def _encode_text(self, call: _Call) -> _Text:
        dtype = self.unet.dtype
        states, added = self.encode_prompt(call.prompts, call.negatives, call.guided)
        states = states.to(self.device, dtype)
        if added is None:
            return _Text(states, None, None)
        added["text_embeds"] = added["text_embeds"].to(self.device, dtype)
        added["time_ids"] = self._time_ids(call.height, call.width, states.shape[0], added["text_embeds"].shape[-1], dtype)
        cond_added = {k: v[call.batch:] for k, v in added.items()} if call.guided else added
        return _Text(states, added, cond_added)

    def _initial_latents(self, call: _Call, gens: list[torch.Generator]) -> torch.Tensor:
        """Seeded noise (or the given latents); img2img: the init image's latent noised to the first timestep."""
        device, dtype, f = self.device, self.unet.dtype, self.vae_scale_factor
        shape = (call.batch, self.vae.config.latent_channels, call.height // f, call.width // f)
        noise = call.latents.to(device, dtype) if call.latents is not None else _noise(shape, gens, device, dtype)
        if call.init_image is None:
            return noise * call.scheduler.init_noise_sigma
        if call.inpaint is not None:
            return inp.start(call.inpaint, self, noise, call.scheduler, call.timesteps)
        x0 = self.encode_image(call.init_image, call.width, call.height).to(device, dtype)
        return call.scheduler.add_noise(x0.expand(call.batch, -1, -1, -1), noise, call.timesteps[:1].repeat(call.batch))

    def _denoise(self, call: _Call, x: torch.Tensor, gens, prepared: list[_Prepared], text: _Text) -> torch.Tensor:
        """The sampling loop: units in their window, the controlled U-Net, guidance, the scheduler step."""
        sched, n = call.scheduler, len(call.timesteps)
        step_kwargs = _step_kwargs(sched, call.eta, gens)
        if any(is_xs(p.unit.controlnet) for p in prepared) and len(prepared) > 1:
            raise InputError("a ControlNet-XS unit must be the only unit: its U-Net is coupled with it, so other "
                             "ControlNets and adapters cannot be added to the same pass")
        cache = ResidualCache(call.approx.control_reuse, call.approx.control_reuse_from, n)
        deep = DeepFeatures(call.approx.deepcache, n)
        if deep.every > 1 and any(is_xs(p.unit.controlnet) for p in prepared):
            raise InputError("deepcache does not work with a ControlNet-XS unit (its U-Net is coupled with it); leave it at 1")
        for i, t in enumerate(tqdm(call.timesteps, disable=not call.progress, desc="sampling", leave=False)):
            x_in = sched.scale_model_input(torch.cat([x, x]) if call.guided else x, t)
            # a unit outside its window, or at factor 0 in its strength schedule, is not run at all
            running = [(p, f) for p in prepared if active(i, n, p.unit.start, p.unit.end) and (f := p.unit.factor_at(i / n)) > 0]
            unet_in = inp.unet_input(call.inpaint, x_in)  # 9-channel inpainting U-Nets: + mask, masked picture
            if prepared and is_xs(prepared[0].unit.controlnet):
                eps = self._predict_xs(prepared[0], running, unet_in, t, text)
            else:
                nets = [(p, f) for p, f in running if not (t2i.is_adapter(p.unit.controlnet) or lllite.is_lllite(p.unit.controlnet))]
                features = t2i.sum_features([(p.embedding, p.scales[0] * f) for p, f in running
                                             if t2i.is_adapter(p.unit.controlnet)], x_in.shape[0])
                hooked = [(p.unit.controlnet, p.embedding, p.scales[0] * f) for p, f in running if lllite.is_lllite(p.unit.controlnet)]
                with lllite.applied(self.unet, hooked):  # LLLite: the projections' inputs, during this call
                    if deep.shallow(i):  # DeepCache: the shallowest level on the kept deep features
                        eps = self._predict_shallow(nets, unet_in, x_in, t, text, call, deep, features)
                    else:
                        controls = [self._residuals(p, x_in, t, text, call, f, cache, i) for p, f in nets]
                        if self.compiled is not None and not hooked and features is None and deep.every == 1:
                            eps = self.compiled.predict(unet_in, t, text.states, controls, text.added)
                        else:
                            eps = controlled_unet(self.unet, unet_in, t, text.states, controls,
                                                  added_cond_kwargs=text.added, adapter_features=features, keep=deep.store())
            if call.guided:
                uncond, cond = eps.chunk(2)
                eps = uncond + call.guidance_scale * (cond - uncond)
            eps = inp.model_output(call.inpaint, eps, x_in[-call.batch:], t, sched)
            x = sched.step(eps, t, x, **step_kwargs, return_dict=False)[0]
            x = inp.after_step(call.inpaint, x, i, call.timesteps, sched)
            if call.callback is not None:
                replaced = call.callback(i, t, x)
                if torch.is_tensor(replaced):
                    x = replaced
        return x

    def _predict_xs(self, p: _Prepared, running: list, unet_in: torch.Tensor, t, text: _Text) -> torch.Tensor:
        """The U-Net coupled with a ControlNet-XS; outside the unit's window it runs without control."""
        factor = next((f for q, f in running if q is p), 0.0)
        hint = torch.cat([p.embedding] * (unet_in.shape[0] // p.embedding.shape[0])).to(self.unet.dtype)
        return controlled_unet_xs(p.unit.controlnet.coupled(self.unet), unet_in, t, text.states, hint, p.scales[0] * factor,
                                  apply_control=factor > 0, added_cond_kwargs=text.added)

    def _residuals(self, p: _Prepared, x_in: torch.Tensor, t, text: _Text, call: _Call, factor: float = 1.0,
                   cache: ResidualCache | None = None, step: int = 0) -> tuple:
        """One unit's (residuals, scales) for this step, its scales times the schedule's `factor` (1: unchanged);
        cond-only units (and every unit under `control_cond_only`) run on the cond half of a guided batch.
        `cache` (control_reuse) may hand back the residuals of an earlier step instead of running the ControlNet."""
        cn = p.unit.controlnet
        scales = p.scales if factor == 1.0 else [s * factor for s in p.scales]
        half, rows = self._halved(p, call)
        net = cn if self.compiled is None else self.compiled.controlnet(cn)

        def run():
            return net(x_in[rows].to(p.dtype), t, text.states[rows].to(p.dtype), hint_embedding=p.embedding,
                       added_cond_kwargs=text.cond_added if half else text.added)

        res = run() if cache is None else cache.residuals(id(p), step, run)
        if not half:
            return res, scales
        res = res.scaled(scales)
        return ControlResiduals(*_unstack(_both_halves((*res.down, res.mid), p.cond_only))), None

    @staticmethod
    def _halved(p: _Prepared, call: _Call) -> tuple[bool, slice]:
        """Whether the unit's ControlNet runs on the cond half of a guided batch only, and those rows."""
        half = (p.cond_only or call.approx.control_cond_only) and call.guided
        return half, slice(call.batch, None) if half else slice(None)

    def _predict_shallow(self, nets: list, unet_in, x_in, t, text: _Text, call: _Call, deep: DeepFeatures, features):
        """A DeepCache step: each ControlNet's residuals on the shallow connections only, then the
        U-Net's shallowest level on the deep features kept at the last full step."""
        count, total = shallow_count(self.unet), None
        for p, f in nets:
            cn = p.unit.controlnet
            half, rows = self._halved(p, call)
            res = shallow_control(cn, x_in[rows].to(p.dtype), t, text.states[rows].to(p.dtype), p.embedding, count,
                                  text.cond_added if half else text.added)
            res = tuple(d * (s * f) for d, s in zip(res, p.scales))
            res = _both_halves(res, p.cond_only) if half else res
            total = res if total is None else tuple(a + b for a, b in zip(total, res))
        deep.shallow_runs += 1
        return shallow_unet(self.unet, unet_in, t, text.states, deep.kept["deep"], total, added_cond_kwargs=text.added,
                            adapter_features=features)

    def _output(self, call: _Call, x: torch.Tensor, hints: list) -> ControlPipelineOutput:
        _check_finite(x, "the latents", self.unet.dtype, call.guidance_scale)
        if call.output_type == "latent":
            return ControlPipelineOutput(x, call.seeds, hints, x)
        pixels = inp.paste_back(call.inpaint, self.decode(x))
        _check_finite(pixels, "the decoded picture", self.vae.dtype, call.guidance_scale)
        if call.output_type == "pt":
            return ControlPipelineOutput(pixels, call.seeds, hints, x)
        arr = pixels.permute(0, 2, 3, 1).cpu().numpy()
        out = arr if call.output_type == "np" else [img.to_pil(a) for a in arr]
        return ControlPipelineOutput(out, call.seeds, hints, x)
