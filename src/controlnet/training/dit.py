"""The transformer-base side of training (SD3/SD3.5, Flux): what `train` loads, draws, encodes and minimises
when `--base-model` is an SD3 or Flux folder. The loop (`controlnet.training.loop`) is the same as for
U-Nets: it asks its recipe for these pieces, so data order, checkpoints, resume, signals, DDP and the
feature cache give the same guarantees here.

The step is `flow_matching.sd3_controlnet_loss` / `flux_controlnet_loss` (equal to diffusers'
`train_controlnet_sd3.py` / `train_controlnet_flux.py`); the ControlNet is the base's first blocks
(`SD3ControlNet.from_transformer`, `FluxControlNet.from_transformer`; `--controlnet-layout xlabs`: an
XLabs net, whose hint encoder takes the pixels where the others take the hint's VAE latent). Two
deliberate differences from the examples: the hint enters the VAE in [-1, 1], as the samplers (and diffusers' pipelines)
feed it, where the SD3 example feeds [0, 1]; and every random draw comes from the micro-batch's own
generator (`draw`), so a resumed or multi-process run draws what the uninterrupted one drew.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from controlnet.errors import InputError
from controlnet.training.flow_matching import flux_controlnet_loss, sample_sigmas, sd3_controlnet_loss

# diffusers' examples: from_transformer's 12 SD3 blocks; --num_double_layers 4, --num_single_layers 10 (Flux)
DEFAULT_LAYERS = {"sd3": (12, 0), "flux": (4, 10), "xlabs": (2, 0)}  # x-flux: controlnet_depth=2, double blocks only
DEFAULT_SEQUENCE = {"sd3": 77, "flux": 512}  # --max_sequence_length of the examples
NAMES = {"sd3": "SD3", "flux": "Flux"}
A_NAME = {"sd3": "an SD3", "flux": "a Flux"}
# Options of the U-Net recipe (paper §3 ablations, the original code's switches), refused on transformer bases
UNET_ONLY = {"unlock_decoder": False, "only_mid_control": False, "connection_init": "zero", "copy": "full",
             "hint_encoder": "code", "prediction_type": None, "split_unet": True, "gradient_checkpointing": False,
             "save_original": False, "inpaint_maps": False, "union": False}
DIT_ONLY = {"num_layers": None, "num_single_layers": None, "weighting_scheme": "logit_normal",
            "max_sequence_length": None, "embedded_guidance": 3.5, "controlnet_layout": None}


def check_options(config, kind: str | None) -> None:
    """Options of the other kind of base are refused, not ignored."""
    wrong = UNET_ONLY if kind else DIT_ONLY
    given = [f"--{k.replace('_', '-')}" for k, default in wrong.items() if getattr(config, k) != default]
    if given:
        what = f"{A_NAME[kind]} base (a transformer)" if kind else "U-Net bases"
        raise InputError(f"{', '.join(given)} {'do' if len(given) > 1 else 'does'} not apply to {what}: "
                         f"{'they are U-Net options' if kind else 'SD3/Flux options'}; leave "
                         f"{'them' if len(given) > 1 else 'it'} out")
    if kind == "sd3" and config.num_single_layers is not None:
        raise InputError("--num-single-layers is for Flux bases (SD3 has one kind of block: --num-layers)")
    if kind == "sd3" and config.controlnet_layout is not None:
        raise InputError("--controlnet-layout is for Flux bases (SD3 ControlNets take the hint's VAE latent); leave it out")


class DiTDenoiser(nn.Module):
    """The trainable ControlNet and the frozen transformer as one module (what DDP wraps): the step's loss."""

    def __init__(self, kind: str, controlnet: nn.Module, transformer: nn.Module, weighting_scheme: str,
                 embedded_guidance: float):
        super().__init__()
        self.kind, self.controlnet, self.transformer = kind, controlnet, transformer
        self.weighting_scheme, self.embedded_guidance = weighting_scheme, embedded_guidance

    def forward(self, latents, prompt_embeds, pooled_prompt_embeds, control_latents, noise, sigmas, controlnet_pooled):
        common = dict(latents=latents, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds,
                      control_latents=control_latents, noise=noise, sigmas=sigmas)
        if self.kind == "sd3":
            return sd3_controlnet_loss(self.transformer, self.controlnet, weighting_scheme=self.weighting_scheme,
                                       controlnet_pooled=controlnet_pooled, **common)
        return flux_controlnet_loss(self.transformer, self.controlnet, guidance_scale=self.embedded_guidance, **common)


@dataclass
class DiTDraws:
    noise: torch.Tensor
    posterior: torch.Tensor  # N(0, 1) of the target's VAE sample
    hint_posterior: torch.Tensor  # N(0, 1) of the hint's VAE sample (the examples sample both)
    sigmas: torch.Tensor
    drop_prompt: torch.Tensor


class DiTRecipe:
    """What the training loop asks of a base, for SD3 and Flux (the U-Net's is `loop.UNetRecipe`)."""

    def __init__(self, kind: str, config):
        self.kind, self.config = kind, config
        self.sequence = config.max_sequence_length or DEFAULT_SEQUENCE[kind]
        self.xlabs = config.controlnet_layout == "xlabs"  # a fresh copy's layout; a --controlnet brings its own
        self.schedule = None  # the base's scheduler as it was trained: σ are drawn from it (sampling changes its copy)

    def accelerator_kwargs(self) -> list:
        """A copied joint block's text output reaches nothing after the last block: DDP must allow unused
        parameters (as the examples set it)."""
        from accelerate.utils import DistributedDataParallelKwargs

        return [DistributedDataParallelKwargs(find_unused_parameters=True)]

    # ------------------------------------------------------------------ models

    def load_models(self, run, base=None, dataset=None) -> None:
        """The base locked in the mixed-precision dtype, the ControlNet in fp32 (master weights)."""
        from controlnet.pipeline.flux import FluxBase
        from controlnet.pipeline.sd3 import SD3Base

        config = self.config
        base = (SD3Base if self.kind == "sd3" else FluxBase).from_pretrained(config.base_model)
        self._check_base(base)
        controlnet = self._controlnet(base).train()
        if controlnet.dtype != torch.float32:
            controlnet.float()
        device, dtype = run.accelerator.device, {"no": torch.float32, "fp16": torch.float16,
                                                 "bf16": torch.bfloat16}[config.mixed_precision]
        for module in self._frozen(base):
            module.requires_grad_(False).eval()
            module.to(device) if module.dtype == dtype else module.to(device, dtype)
        self.schedule = copy.deepcopy(base.scheduler)
        run.denoiser = DiTDenoiser(self.kind, controlnet, base.transformer, config.weighting_scheme,
                                   config.embedded_guidance)
        run.base, run.controlnet, run.weight_dtype, run.prediction_type = base, controlnet, dtype, "flow"

    @staticmethod
    def _frozen(base) -> list[nn.Module]:
        return [m for m in (base.transformer, base.vae, base.text_encoder, base.text_encoder_2,
                            getattr(base, "text_encoder_3", None)) if m is not None]

    def _check_base(self, base) -> None:
        t, multiple = base.transformer, base.size_multiple
        if self.kind == "flux" and t.x_embedder.in_features == 2 * (t.config.out_channels or t.config.in_channels):
            raise InputError(f"--base-model {self.config.base_model} is a FLUX.1 Control base (the hint rides on its "
                             "input channels): ControlNets are trained for plain Flux bases")
        if self.config.resolution % multiple:
            raise InputError(f"--resolution {self.config.resolution} is not a multiple of {multiple} (this "
                             f"{NAMES[self.kind]} base's VAE factor times its patch size)")

    def _controlnet(self, base):
        config, t = self.config, base.transformer
        if config.controlnet:
            return self._loaded(base)
        from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet

        double, single = self._layers(t)
        torch.manual_seed(config.seed)
        if self.kind == "sd3":
            return SD3ControlNet.from_transformer(t, double)
        return FluxControlNet.from_transformer(t, double, single, pixel_hint=self.xlabs)

    def _layers(self, t) -> tuple[int, int]:
        """(blocks, single blocks) to copy: the options or the examples' defaults, within the base's."""
        config, name = self.config, NAMES[self.kind]
        n = len(t.transformer_blocks)
        most = n - 1 if self.kind == "sd3" else n  # SD3's last block is context_pre_only: it takes no residual
        defaults = DEFAULT_LAYERS["xlabs" if self.xlabs else self.kind]
        double = config.num_layers or min(defaults[0], most)
        if not 1 <= double <= most:
            raise InputError(f"--num-layers {double}: this {name} base has {n} blocks, so a ControlNet copies 1..{most}"
                             + (" (its last block takes no ControlNet residual)" if self.kind == "sd3" else ""))
        if self.kind == "sd3":
            return double, 0
        s = len(t.single_transformer_blocks)
        single = config.num_single_layers if config.num_single_layers is not None else min(defaults[1], s)
        if self.xlabs and single:
            raise InputError(f"--num-single-layers {single}: XLabs ControlNets copy double blocks only; leave it out")
        if single > s:
            raise InputError(f"--num-single-layers {single}: this Flux base has {s} single blocks, so 0..{s}")
        return double, single

    def _loaded(self, base):
        """--controlnet: an existing net of this base's family and width, which the trainer can feed."""
        from controlnet.assets import resolve_controlnet
        from controlnet.checkpoints import load_controlnet
        from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet

        config, name, t = self.config, NAMES[self.kind], base.transformer
        label = f"--controlnet {config.controlnet}"
        if config.num_layers is not None or config.num_single_layers is not None:
            raise InputError(f"--num-layers/--num-single-layers copy blocks of the base; {label} has its own: leave "
                             "them out")
        cn = load_controlnet(resolve_controlnet(config.controlnet))
        wanted = SD3ControlNet if self.kind == "sd3" else FluxControlNet
        if not isinstance(cn, (SD3ControlNet, FluxControlNet)):
            raise InputError(f"{label} is a U-Net ControlNet ({cn.family}), not a ControlNet for {A_NAME[self.kind]} "
                             f"base: start from one made for {config.base_model}, or leave --controlnet out")
        if not isinstance(cn, wanted):
            raise InputError(f"{label} is a {cn.family}, not a ControlNet for {A_NAME[self.kind]} base: start from one made for "
                             f"{config.base_model}, or leave --controlnet out to copy its blocks")
        c, tc = cn.config, t.config
        pixel_hint = self._takes_pixels(cn)  # its own patch size after the hint encoder
        keys = ("in_channels", *(() if pixel_hint else ("patch_size",)), "pooled_projection_dim", "joint_attention_dim")
        differ = [f"{k} {c.get(k)} vs {tc.get(k)}" for k in keys
                  if c.get(k) is not None and c.get(k) != tc.get(k)]
        if cn.inner_dim != t.inner_dim:
            differ.insert(0, f"width {cn.inner_dim} vs {t.inner_dim}")
        if differ:
            raise InputError(f"{label} ({cn.family}) was made for another {name} base than {config.base_model}: "
                             f"{'; '.join(differ)}")
        if self.kind == "flux" and c.num_mode is not None:
            raise InputError(f"{label} is {cn.family}: the trainer trains nets without control modes (InstantX- or "
                             "XLabs-style); leave --controlnet out to copy the base's blocks")
        if self.kind == "flux" and self.config.controlnet_layout not in (None, "xlabs" if pixel_hint else "instantx"):
            raise InputError(f"{label} is {cn.family}, not the {self.config.controlnet_layout} layout: leave "
                             "--controlnet-layout out (the file has its own)")
        if self.kind == "sd3" and c.extra_conditioning_channels:
            raise InputError(f"{label} is an inpainting ControlNet (mask channel): not trainable here")
        return cn

    def _takes_pixels(self, cn) -> bool:
        """XLabs nets: the hint enters as pixels in [-1, 1] through their own encoder, not the VAE."""
        return self.kind == "flux" and cn.input_hint_block is not None

    # ------------------------------------------------------------------ one micro-batch

    def latent_shape(self, run) -> tuple[int, int, int]:
        side = self.config.resolution // run.base.vae_scale_factor
        return run.base.vae.config.latent_channels, side, side

    def draw(self, run) -> DiTDraws:
        """This process's share of the global micro-batch's draws, from a generator seeded by (seed, micro-batch):
        independent of the number of processes and of where a run was resumed."""
        config = self.config
        world_batch = config.batch_size * run.world
        mine = slice(run.rank * config.batch_size, (run.rank + 1) * config.batch_size)
        g = torch.Generator().manual_seed((config.seed * 1_000_003 + run.micro) % (2**63))
        shape = (world_batch, *self.latent_shape(run))
        noise, posterior, hint_posterior = (torch.randn(shape, generator=g) for _ in range(3))
        sigmas = sample_sigmas(config.weighting_scheme, world_batch, self.schedule, generator=g)
        drop = torch.rand(world_batch, generator=g) < config.empty_prompt_prob
        return DiTDraws(noise[mine], posterior[mine], hint_posterior[mine], sigmas[mine], drop[mine])

    def features(self, run, batch: dict, draws: DiTDraws) -> tuple[dict, list[str]]:
        """(the loss's inputs but noise and σ, the prompts after dropping): VAE samples of target and hint with
        the shift and scale (XLabs nets: the hint's pixels), the text embeddings; through the feature cache
        when there is one."""
        from controlnet.nn.dit_controlnet import hint_transform_fn
        from controlnet.pipeline.flux import vae_shift
        from controlnet.training.step import drop_prompts, encode_images

        base, device, cache, dtype = run.base, run.accelerator.device, run.cache, run.weight_dtype
        vae, cn = base.vae, run.controlnet
        pixel_hint = self._takes_pixels(cn)
        prompts = drop_prompts(batch["prompt"], draws.drop_prompt)
        images = batch["image"].to(device)
        hints = hint_transform_fn(cn.config.get("hint_transform", "identity"))(batch["hint"]).to(device) * 2 - 1
        zero_pooled = bool(cn.config.get("force_zeros_for_pooled_projection", False))  # InstantX SD3 nets
        cached = cache is not None and not self.config.random_flip
        if cached:
            target = cache.posterior(batch["key"], images, lambda x: encode_images(vae, x))
            control = None if pixel_hint else cache.posterior(_hint_keys(batch["hint"]), hints,
                                                              lambda x: encode_images(vae, x))
            embeds, pooled = (t.to(device) for t in cache.text(prompts, self.encode(base)))
        else:
            target, control = encode_images(vae, images), None if pixel_hint else encode_images(vae, hints)
            embeds, pooled = self.encode(base)(prompts)
        shift, scale = vae_shift(vae), vae.config.scaling_factor

        def latent(mean_std, eps, shifted=True):
            mean, std = mean_std
            return ((mean.float() + std.float() * eps.to(device)) - (shift if shifted else 0)) * scale

        features = dict(latents=latent(target, draws.posterior).to(dtype),
                        control_latents=(hints if pixel_hint else latent(control, draws.hint_posterior,
                                                                         not zero_pooled)).to(dtype),
                        prompt_embeds=embeds.to(dtype), pooled_prompt_embeds=pooled.to(dtype),
                        controlnet_pooled=torch.zeros_like(pooled, dtype=dtype) if zero_pooled else None)
        return features, prompts

    def loss(self, run, batch: dict, draws: DiTDraws, features: dict) -> torch.Tensor:
        device = run.accelerator.device
        return run.denoiser(noise=draws.noise.to(device, run.weight_dtype), sigmas=draws.sigmas.to(device),
                            **features)

    def encode(self, base):
        """prompts -> (token states, pooled vector), as this base's sampler encodes them."""
        from controlnet.pipeline.flux import encode_flux_prompt
        from controlnet.pipeline.sd3 import encode_sd3_prompt

        if self.kind == "flux":
            return lambda p: encode_flux_prompt(base.tokenizer, base.text_encoder, base.tokenizer_2,
                                                base.text_encoder_2, p, self.sequence)
        tokenizers = (base.tokenizer, base.tokenizer_2, base.tokenizer_3)
        encoders = (base.text_encoder, base.text_encoder_2, base.text_encoder_3)

        def encode(prompts):
            with torch.no_grad():
                return encode_sd3_prompt(tokenizers, encoders, prompts, self.sequence,
                                         base.transformer.config.joint_attention_dim)
        return encode

    def feature_cache(self, run):
        from controlnet.training.base import model_hash
        from controlnet.training.cache import FeatureCache

        if not self.config.cache_dir:
            return None
        base = run.base
        dtype = str(run.weight_dtype).replace("torch.", "")
        encoders = self._frozen(base)[2:]
        return FeatureCache(self.config.cache_dir, f"{model_hash(base.vae)}-{dtype}",
                            f"{model_hash(*encoders)}-{dtype}-{self.kind}{self.sequence}")

    def save_model(self, controlnet, folder: Path) -> None:
        """The diffusers layout, its config naming diffusers' class (`FluxControlNetModel.from_pretrained`
        and `load_controlnet` read it)."""
        from controlnet.checkpoints.dit import save_dit_controlnet

        save_dit_controlnet(controlnet, folder)

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def sample(self, controlnet, base, prompts: list[str], hint: torch.Tensor, *, steps: int = 20,
               guidance_scale: float = 7.0, seed: int = 0, only_mid_control: bool = False) -> np.ndarray:
        """Images (N×H×W×3 uint8) for `prompts` under `hint` (N×3×H×W in [0, 1]), by `sample_sd3` /
        `sample_flux` on the models in memory; without a prompt, SD3 samples the conditional branch alone."""
        from controlnet.pipeline.flux import FluxControl, sample_flux
        from controlnet.pipeline.sd3 import SD3Control, sample_sd3

        t = base.transformer
        generator = torch.Generator().manual_seed(seed)
        pixels = hint * 2 - 1
        height, width = hint.shape[-2:]
        encode = self.encode(base)
        embeds, pooled = encode(prompts)
        scheduler = copy.deepcopy(base.scheduler)
        common = dict(width=width, height=height, steps=steps, generator=generator, output_type="np")
        with torch.autocast(t.device.type, dtype=t.dtype, enabled=t.dtype != torch.float32):
            if self.kind == "flux":
                out = sample_flux(t, base.vae, scheduler, embeds, pooled, [FluxControl(controlnet, pixels)],
                                  guidance_scale=self.config.embedded_guidance, **common)
            else:
                guided = guidance_scale > 1 and any(prompts)
                negative = dict(zip(("negative_prompt_embeds", "negative_pooled_prompt_embeds"),
                                    encode([""] * len(prompts)))) if guided else {}
                out = sample_sd3(t, base.vae, scheduler, embeds, pooled, [SD3Control(controlnet, pixels)],
                                 guidance_scale=guidance_scale if guided else 1.0, **negative, **common)
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def _hint_keys(hints: torch.Tensor) -> list[str]:
    """Content keys of the hints for the latent cache (what the VAE sees, as the targets' keys)."""
    return [hashlib.blake2b(h.numpy().tobytes(), digest_size=16, person=b"cn-hint").hexdigest() for h in hints.cpu()]


def recipe_for(config) -> DiTRecipe | None:
    """The recipe of an SD3/Flux `--base-model`, or None for U-Net bases; other kinds' options refused."""
    from controlnet.generation import dit_kind

    kind = dit_kind(config.base_model)  # another transformer pipeline: one line naming it
    check_options(config, kind)
    return DiTRecipe(kind, config) if kind else None


