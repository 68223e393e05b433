"""Tiny, random, fully offline Stable Diffusion pipelines shaped like SD 1.x, SD 2.x (v-prediction,
linear projections, per-level heads) and SDXL (two text encoders, text-time embedding), and
ControlNets for them. Import as `from tiny_models import ...` (pytest puts tests/ on sys.path,
since tests/ is not a package). The model configs themselves are written once, in `controlnet.tiny`.

The tokenizer is a byte-level CLIP BPE with no merges: every string tokenizes, nothing is
downloaded (reference/diffusers_controlnet.md §8.2). The VAE has 4 levels, so the VAE scale factor
is 8 as in the real models and hints are 8x the latent size.
"""

from __future__ import annotations

import tempfile

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from controlnet.nn import ControlNet
from controlnet.offline_tokenizer import offline_clip_tokenizer
from controlnet.tiny import (  # noqa: F401  (FAMILIES: re-exported for the tests)
    FAMILIES,
    SD_NOISE_SCHEDULE,
    clip_text_config,
    randomize_connections,
    tiny_text_kwargs,
    tiny_unet_config,
    tiny_vae_config,
)

TEXT_WIDTH = {"sd1": 32, "sd2": 48}


def tiny_tokenizer(max_len: int = 77) -> CLIPTokenizer:
    with tempfile.TemporaryDirectory() as d:
        return offline_clip_tokenizer(d, max_len)


def tiny_text_config(width: int, **extra) -> CLIPTextConfig:
    return clip_text_config(**tiny_text_kwargs(width), **extra)


def tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(**tiny_vae_config(8))


def tiny_scheduler(family: str):
    common = dict(**SD_NOISE_SCHEDULE, steps_offset=1)
    if family == "sdxl":
        return EulerDiscreteScheduler(**common, timestep_spacing="leading")
    prediction = "v_prediction" if family == "sd2" else "epsilon"
    return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=False, prediction_type=prediction)


def tiny_pipeline(family: str = "sd1", seed: int = 0, unet_config: dict | None = None):
    """A diffusers StableDiffusion(XL)Pipeline of random tiny models (eval mode, CPU)."""
    torch.manual_seed(seed)
    config = tiny_unet_config(family)
    config.update(sample_size=8, **(unet_config or {}))
    unet = UNet2DConditionModel(**config)
    vae = tiny_vae()
    tok = tiny_tokenizer()
    if family == "sdxl":
        te = CLIPTextModel(tiny_text_config(32))
        te2 = CLIPTextModelWithProjection(tiny_text_config(32, projection_dim=32, hidden_act="gelu"))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tiny_tokenizer(),
                                         unet=unet, scheduler=tiny_scheduler(family))
    else:
        te = CLIPTextModel(tiny_text_config(TEXT_WIDTH[family]))
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=tiny_scheduler(family),
                                       safety_checker=None, feature_extractor=None, image_encoder=None,
                                       requires_safety_checker=False)
    for m in (unet, vae, te, getattr(pipe, "text_encoder_2", None)):
        if m is not None:
            m.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_controlnet(pipe, seed: int = 1, std: float = 0.05, **kwargs) -> ControlNet:
    """A ControlNet copied from the pipeline's U-Net with random zero convs (so its effect shows)."""
    torch.manual_seed(seed)
    cn = ControlNet.from_unet(pipe.unet, vae_scale_factor=8, **kwargs).eval()
    randomize_connections(cn, seed=seed, std=std)
    return cn


def tiny_union(unet_config: dict, types: int = 8, seed: int = 0, **kwargs):
    """A random union ControlNet (xinsir / ProMax layout) for a U-Net config, its zero modules (and the
    zero linear) randomised so every part shows."""
    from controlnet.nn.controlnet import UNET_KEYS
    from controlnet.nn.union import UnionControlNet

    torch.manual_seed(seed)
    width = unet_config["block_out_channels"][0]
    kwargs.setdefault("conditioning_embedding_out_channels", (16, 32, 48, 64))
    cn = UnionControlNet(**{k: unet_config[k] for k in UNET_KEYS if k in unet_config}, num_control_type=types,
                         num_trans_channel=width, num_proj_channel=width, num_trans_head=8, **kwargs).eval()
    g = torch.Generator().manual_seed(seed)
    zero = [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out, cn.spatial_ch_projs]
    with torch.no_grad():
        for p in (p for module in zero for p in module.parameters()):
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return cn


def save_base_and_controlnet(folder, family: str = "sd1"):
    """The command-line tests' files: a tiny base model in `folder/base`, its ControlNet in `folder/cn`."""
    pipe = tiny_pipeline(family)
    pipe.save_pretrained(folder / "base")
    tiny_controlnet(pipe, seed=1).save_pretrained(folder / "cn")
    return pipe


def controlnet_pipeline(pipe, controlnets):
    """diffusers' StableDiffusion(XL)ControlNetPipeline sharing `pipe`'s components; `controlnets`
    are ours, converted to diffusers' ControlNetModel (one, or a list for MultiControlNetModel)."""
    from diffusers import StableDiffusionControlNetPipeline, StableDiffusionXLControlNetPipeline

    many = isinstance(controlnets, (list, tuple))
    nets = [c.to_diffusers().eval() for c in (controlnets if many else [controlnets])]
    net = nets if many else nets[0]
    if isinstance(pipe, StableDiffusionXLPipeline):
        out = StableDiffusionXLControlNetPipeline(
            vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2, tokenizer=pipe.tokenizer,
            tokenizer_2=pipe.tokenizer_2, unet=pipe.unet, controlnet=net, scheduler=pipe.scheduler,
        )
    else:
        out = StableDiffusionControlNetPipeline(
            vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet, controlnet=net,
            scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None, image_encoder=None,
            requires_safety_checker=False,
        )
    out.set_progress_bar_config(disable=True)
    return out


def diffusers_latents(pipe, classes: tuple, extra: dict, hint, steps: int, size: int, **kw) -> torch.Tensor:
    """Latents of diffusers' own pipeline (`classes`: its SD and its SDXL variant) on `pipe`'s parts and
    `extra` (its ControlNet-XS or adapter), from `start_latents`: what a parity test compares with."""
    parts = {k: getattr(pipe, k) for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    sd_class, sdxl_class = classes
    if hasattr(pipe, "text_encoder_2"):
        ref = sdxl_class(**parts, text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2, **extra)
    else:
        ref = sd_class(**parts, **extra, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    return ref("a red cube", image=hint, num_inference_steps=steps, guidance_scale=7.0, latents=start_latents(pipe, size, size),
               width=size, height=size, output_type="latent", **kw).images


def our_latents(pipe, units, steps: int, size: int, **kw) -> torch.Tensor:
    """Latents of our `ControlPipeline` on `pipe` with the settings `diffusers_latents` uses."""
    from controlnet.pipeline import ControlPipeline

    return ControlPipeline.from_diffusers(pipe)("a red cube", units, steps=steps, output_type="latent", progress=False,
                                                 guidance_scale=7.0, latents=start_latents(pipe, size, size), width=size,
                                                 height=size, scheduler="euler" if pipe.unet.config.addition_embed_type
                                                 else "ddim", **kw).images


def randomized(model, seed: int, std: float = 0.1):
    """Random weights everywhere (diffusers zero-initialises the parts a test must see)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def random_hint(width: int, height: int, seed: int = 0):
    """A random RGB condition image (PIL) of the given size."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def start_latents(pipe, width: int, height: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, pipe.unet.config.in_channels, height // 8, width // 8, generator=g)
