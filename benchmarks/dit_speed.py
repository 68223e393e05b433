"""Transformer bases on the CPU: our Flux / SD3 samplers vs diffusers' FluxControlNetPipeline /
StableDiffusion3ControlNetPipeline, same weights, same inputs, one run.

The networks keep the real layer proportions (Flux-dev: 19 double + 38 single blocks, InstantX canny
5+0, Union Pro 5+10 with a mode; SD3-medium: 24 joint blocks, InstantX 6) at a small width, with
a realistic token count for a CPU (256 px: 256 image tokens; 128 text tokens for Flux, 77+77 for SD3
under CFG). Both sides start from the same prompt embeddings (text encoders are not part of either
sampler) and return latents; the VAE is narrow (4 channels) but scales by 8 with 16 latent channels
as the real ones. Every case runs round-robin after a warm-up; each call is timed in CPU seconds of
this single-threaded process (`time.process_time`), so other jobs on a shared machine slow neither
side; medians of the repeats. Also printed: max |ours - diffusers| on the latents (same numbers) and
the aten operations each call dispatches (machine-independent: the kernels a GPU would launch).

    OMP_NUM_THREADS=1 python benchmarks/dit_speed.py [--size 256 --steps 4 --repeats 7 --head-dim 32 --heads 2]

`benchmarks/gpu_perf.py` builds the full-width models from the same tables (`build_flux`, `build_sd3`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared tiny-model builders

import torch  # noqa: E402

from two_units import OpCounter  # noqa: E402  (every aten op dispatched: every kernel a GPU would launch)

# Real configurations (diffusers' config.json of the released models).
FLUX_DEV = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                axes_dims_rope=(16, 56, 56))
FLUX_NETS = {"instantx": dict(num_layers=5, num_single_layers=0),  # InstantX/FLUX.1-dev-Controlnet-Canny
             "instantx-b": dict(num_layers=5, num_single_layers=0),
             "union": dict(num_layers=5, num_single_layers=10, num_mode=10)}  # Union Pro (1.0)
SD3_MEDIUM = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                  num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                  pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
SD3_NETS = {"instantx": dict(num_layers=6), "instantx-b": dict(num_layers=6)}  # InstantX/SD3-Controlnet-Canny
VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
           down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
           use_quant_conv=False, use_post_quant_conv=False)
VAE_SCALING = {"flux": dict(shift_factor=0.1159, scaling_factor=0.3611), "sd3": dict(shift_factor=0.0609, scaling_factor=1.5305)}
NARROW_VAE = dict(block_out_channels=(4, 4, 4, 4), layers_per_block=1, norm_num_groups=1)


def narrowed(config: dict, heads: int | None, head_dim: int | None) -> dict:
    """The same layer counts at `heads` × `head_dim`; text/pooled widths and Flux's rotary axes follow."""
    if not heads:
        return dict(config)
    c = dict(config, num_attention_heads=heads, attention_head_dim=head_dim, joint_attention_dim=heads * head_dim,
              pooled_projection_dim=heads * head_dim // 2)
    if "axes_dims_rope" in c:  # (16, 56, 56) of 128, in even parts
        rest = (head_dim - head_dim // 8) // 4 * 2
        c["axes_dims_rope"] = (head_dim - 2 * rest, rest, rest)
    if "caption_projection_dim" in c:
        c["caption_projection_dim"] = heads * head_dim
    return c


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Weights drawn directly in `dtype` (a 12B base never exists in float32 on the GPU)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _build(family: str, base_cls, ref_cls, ours_cls, base_cfg, nets: dict, device, dtype, randomize: bool):
    from diffusers import AutoencoderKL

    from tiny_models import randomized

    ready = (lambda m, seed: randomized(m, seed)) if randomize else (lambda m, seed: m.eval())
    with torch.device(device), default_dtype(dtype):
        torch.manual_seed(0)
        vae = AutoencoderKL(**dict(VAE, **VAE_SCALING[family], **(NARROW_VAE if randomize else {}))).eval()
        if family == "sd3":  # log-variance at its floor: diffusers' unseeded posterior sample is the mean we take
            with torch.no_grad():
                vae.encoder.conv_out.weight[16:] = 0
                vae.encoder.conv_out.bias[16:] = -40
        base = ready(base_cls(**base_cfg), 1)
        pairs = {}
        for seed, (name, extra) in enumerate(nets.items(), 2):
            ref = ready(ref_cls(**dict(base_cfg, **extra)), seed)
            ours = ours_cls(**ref.config).eval()
            ours.load_state_dict(ref.state_dict(), strict=True)
            pairs[name] = (ours, ref)
    for m in (vae, base, *[m for pair in pairs.values() for m in pair]):
        m.requires_grad_(False)
    return vae, base, pairs


def build_flux(device="cpu", dtype=torch.float32, heads=None, head_dim=None, randomize=True, nets=FLUX_NETS):
    """(vae, base, {name: (ours, diffusers' copy)}) with Flux-dev's proportions."""
    from diffusers import FluxControlNetModel, FluxTransformer2DModel

    from controlnet.nn.dit_controlnet import FluxControlNet

    return _build("flux", FluxTransformer2DModel, FluxControlNetModel, FluxControlNet, narrowed(FLUX_DEV, heads, head_dim),
                  nets, device, dtype, randomize)


def build_sd3(device="cpu", dtype=torch.float32, heads=None, head_dim=None, randomize=True, nets=SD3_NETS):
    """(vae, base, {name: (ours, diffusers' copy)}) with SD3-medium's proportions."""
    from diffusers import SD3ControlNetModel, SD3Transformer2DModel

    from controlnet.nn.dit_controlnet import SD3ControlNet

    return _build("sd3", SD3Transformer2DModel, SD3ControlNetModel, SD3ControlNet, narrowed(SD3_MEDIUM, heads, head_dim),
                  nets, device, dtype, randomize)


def _text(base, tokens: int, batch: int, negative: bool, device, dtype) -> dict:
    c = base.config
    g = torch.Generator().manual_seed(9)
    make = lambda *shape: torch.randn(*shape, generator=g).to(device, dtype)  # noqa: E731
    text = dict(prompt_embeds=make(batch, tokens, c.joint_attention_dim), pooled_prompt_embeds=make(batch, c.pooled_projection_dim))
    if negative:
        text.update(negative_prompt_embeds=make(batch, tokens, c.joint_attention_dim),
                    negative_pooled_prompt_embeds=make(batch, c.pooled_projection_dim))
    return text


def flux_runner(built, names: list[str], *, size: int, steps: int, text_tokens: int, modes=None, guidance=3.5, end=1.0):
    """run(impl) -> packed latents: one call of our `sample_flux` or diffusers' `FluxControlNetPipeline`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxControlNetPipeline, FluxMultiControlNetModel

    from controlnet.pipeline.flux import FluxControl, sample_flux
    from tiny_models import random_hint

    vae, base, pairs = built
    modes = modes or [None] * len(names)
    hints = [random_hint(size, size, seed=k) for k in range(len(names))]
    text = _text(base, text_tokens, 1, False, base.device, base.dtype)
    refs = [pairs[n][1] for n in names]
    pipe = FluxControlNetPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                                  text_encoder_2=None, tokenizer_2=None, transformer=base,
                                  controlnet=refs[0] if len(refs) == 1 else FluxMultiControlNetModel(refs))
    pipe.set_progress_bar_config(disable=True)
    one = len(names) == 1

    def run(impl: str):
        g = torch.Generator().manual_seed(0)
        if impl == "ours":
            controls = [FluxControl(pairs[n][0], h, end=end, mode=m) for n, h, m in zip(names, hints, modes)]
            return sample_flux(base, vae, FlowMatchEulerDiscreteScheduler(), text["prompt_embeds"],
                               text["pooled_prompt_embeds"], controls, width=size, height=size, steps=steps,
                               guidance_scale=guidance, generator=g, output_type="latent")
        return pipe(**text, control_image=hints[0] if one else hints, control_mode=modes[0] if one else modes,
                    controlnet_conditioning_scale=1.0 if one else [1.0] * len(names), control_guidance_end=end,
                    height=size, width=size, num_inference_steps=steps, guidance_scale=guidance, generator=g,
                    output_type="latent").images

    return run


def sd3_runner(built, names: list[str], *, size: int, steps: int, text_tokens: int, guidance=7.0, end=1.0):
    """run(impl) -> latents: one call of our `sample_sd3` or diffusers' `StableDiffusion3ControlNetPipeline` (CFG)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3MultiControlNetModel,
        StableDiffusion3ControlNetPipeline,
    )

    from controlnet.pipeline.sd3 import SD3Control, sample_sd3
    from tiny_models import random_hint

    vae, base, pairs = built
    hints = [random_hint(size, size, seed=k) for k in range(len(names))]
    text = _text(base, text_tokens, 1, True, base.device, base.dtype)
    refs = [pairs[n][1] for n in names]
    pipe = StableDiffusion3ControlNetPipeline(
        transformer=base, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=None, tokenizer=None,
        text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
        controlnet=refs[0] if len(refs) == 1 else SD3MultiControlNetModel(refs))
    pipe.set_progress_bar_config(disable=True)
    one = len(names) == 1

    def run(impl: str):
        g = torch.Generator().manual_seed(0)
        if impl == "ours":
            controls = [SD3Control(pairs[n][0], h, end=end) for n, h in zip(names, hints)]
            return sample_sd3(base, vae, FlowMatchEulerDiscreteScheduler(shift=3.0), text["prompt_embeds"],
                              text["pooled_prompt_embeds"], controls, negative_prompt_embeds=text["negative_prompt_embeds"],
                              negative_pooled_prompt_embeds=text["negative_pooled_prompt_embeds"], width=size, height=size,
                              steps=steps, guidance_scale=guidance, generator=g, output_type="latent")
        return pipe(**text, control_image=hints[0] if one else hints,
                    controlnet_conditioning_scale=1.0 if one else [1.0] * len(names), control_guidance_end=end,
                    height=size, width=size, num_inference_steps=steps, guidance_scale=guidance, generator=g,
                    output_type="latent").images

    return run


def cases(args) -> dict:
    """name -> run(impl), all built up front (the narrow models are small)."""
    flux = build_flux(heads=args.heads, head_dim=args.head_dim)
    sd3 = build_sd3(heads=args.heads, head_dim=args.head_dim)
    f = dict(size=args.size, steps=args.steps, text_tokens=args.flux_text_tokens)
    s = dict(size=args.size, steps=args.steps, text_tokens=args.sd3_text_tokens)
    return {
        "Flux, 1 ControlNet (5+0)": flux_runner(flux, ["instantx"], **f),
        "Flux, union (5+10), 1 mode": flux_runner(flux, ["union"], modes=[4], **f),
        "Flux, 2 ControlNets (5+0 each)": flux_runner(flux, ["instantx", "instantx-b"], **f),
        "Flux, 1 ControlNet, window 0-0.5": flux_runner(flux, ["instantx"], end=0.5, **f),
        "SD3, 1 ControlNet (6), CFG": sd3_runner(sd3, ["instantx"], **s),
        "SD3, 2 ControlNets (6 each), CFG": sd3_runner(sd3, ["instantx", "instantx-b"], **s),
        "SD3, 1 ControlNet, window 0-0.5": sd3_runner(sd3, ["instantx"], end=0.5, **s),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (tokens = (size/16)²)")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=32)
    ap.add_argument("--flux-text-tokens", type=int, default=128)
    ap.add_argument("--sd3-text-tokens", type=int, default=154, help="77 CLIP + 77 T5 tokens")
    ap.add_argument("--only", default=None, help="run the cases whose name contains this text")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    runs = {k: v for k, v in cases(args).items() if args.only is None or args.only in k}
    print(f"width {args.heads}x{args.head_dim}, {args.size}x{args.size} px ({(args.size // 16) ** 2} image tokens), "
          f"{args.steps} steps, {torch.get_num_threads()} thread, CPU seconds per call, median of {args.repeats}")
    diffs, ops = {}, {}
    for name, run in runs.items():  # warm-up, the check that both compute the same numbers, the ops they dispatch
        a, b = run("ours"), run("diffusers")
        diffs[name] = float((a - b).abs().max())
        for impl in ("ours", "diffusers"):
            with OpCounter() as counter:
                run(impl)
            ops[(name, impl)] = sum(counter.ops.values())
    times = {(name, impl): [] for name in runs for impl in ("ours", "diffusers")}
    for _ in range(args.repeats):
        for name, run in runs.items():  # round-robin, so slow phases of the machine hit every case
            for impl in ("ours", "diffusers"):
                t0 = time.process_time()
                run(impl)
                times[(name, impl)].append(time.process_time() - t0)
    for name in runs:
        ta, tb = (statistics.median(times[(name, impl)]) for impl in ("ours", "diffusers"))
        print(f"{name:<34} ours {ta:7.3f} s   diffusers {tb:7.3f} s   ratio ours/diffusers {ta / tb:5.3f} "
              f"(goal <= 1.0: {'meets' if ta <= tb else 'misses'})   max |diff| {diffs[name]:.1e}   "
              f"aten ops per call {ops[(name, 'ours')]} / {ops[(name, 'diffusers')]}")


if __name__ == "__main__":
    main()
