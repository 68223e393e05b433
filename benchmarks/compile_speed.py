"""Eager vs compiled sampling on the CPU (`ControlPipeline(..., compile=True)`), one process.

Two bases: the built-in miniature model with its edges ControlNet ("mini", 64 px, its real weights)
and Stable Diffusion 1.5's architecture with random weights ("sd15": `build_base("sd15")`, U-Net
860 M and ControlNet 361 M parameters, at --sd15-size px). One unit, CFG on, DDIM. The eager and
the compiled pipeline share the very same modules. First the compiled pipeline's warm-up (the calls
that compile, timed), then eager and compiled calls alternate (--repeats each), and the medians of
wall and CPU seconds are compared; the compiled latents are checked against eager's.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compile_speed.py                     # both bases
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/compile_speed.py --bases mini --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def mini_case(size: int | None):
    from controlnet.assets import resolve_controlnet, resolve_model
    from controlnet.checkpoints import load_controlnet
    from controlnet.pipeline import ControlPipeline

    pipe = ControlPipeline.from_pretrained(resolve_model("mini"))
    side = size or pipe.vae_scale_factor * pipe.unet.config.sample_size
    return pipe, load_controlnet(resolve_controlnet("mini:edges")), side


def sd15_case(size: int | None):
    from diffusers import DDIMScheduler

    from controlnet.nn import ControlNet
    from controlnet.pipeline import ControlPipeline
    from controlnet.training.base import build_base

    base = build_base("sd15", seed=0)
    for m in (base.unet, base.vae, base.text_encoder):
        m.eval().requires_grad_(False)
    torch.manual_seed(1)
    cn = ControlNet.from_unet(base.unet, vae_scale_factor=base.vae_scale_factor).eval()
    pipe = ControlPipeline(base.unet, base.vae, base.text_encoder, base.tokenizer,
                           DDIMScheduler.from_config(dict(base.scheduler.config)))
    return pipe, cn, size or 256


def bench(name: str, pipe, cn, side: int, args) -> dict:
    from controlnet.pipeline import ControlPipeline, ControlUnit

    compiled = ControlPipeline(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, compile=True)
    hint = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    f = pipe.vae_scale_factor
    latents = torch.randn(1, 4, side // f, side // f, generator=torch.Generator().manual_seed(0))

    def run(p):
        t0, c0 = time.perf_counter(), time.process_time()
        out = p("a photo", [ControlUnit(cn, hint, resize=None)], steps=args.steps, guidance_scale=args.cfg, scheduler="ddim",
                width=side, height=side, latents=latents.clone(), output_type="latent", progress=False).images
        return out, time.perf_counter() - t0, time.process_time() - c0

    t0 = time.perf_counter()
    first, warm_s, _ = run(compiled)  # compiles the U-Net step and the ControlNet
    reference, _, _ = run(pipe)
    print(f"{name}: warm-up (the first compiled call, {compiled.compiled.stats['graphs']} graphs) {warm_s:.1f} s; "
          f"max |compiled - eager| of the latents {float((first - reference).abs().max()):.2e}; "
          f"{compiled.compiled.summary()}", flush=True)
    times = {"eager": ([], []), "compiled": ([], [])}
    for _ in range(args.repeats):  # interleaved, so a slow phase of the machine hits both
        for label, p in (("eager", pipe), ("compiled", compiled)):
            _, wall, cpu = run(p)
            times[label][0].append(wall)
            times[label][1].append(cpu)
    med = {k: (statistics.median(w), statistics.median(c)) for k, (w, c) in times.items()}
    (ew, ec), (cw, cc) = med["eager"], med["compiled"]
    print(f"{name}: {side}x{side} px, {args.steps} steps, CFG {args.cfg}, {torch.get_num_threads()} thread(s), median of "
          f"{args.repeats}: eager {ew:.3f} s (CPU {ec:.3f}), compiled {cw:.3f} s (CPU {cc:.3f}); speed compiled/eager "
          f"{ew / cw:.2f}x wall, {ec / cc:.2f}x CPU; warm-up pays back after {warm_s / max(ew - cw, 1e-9):.0f} calls "
          f"(total {time.perf_counter() - t0:.0f} s)", flush=True)
    return {"base": name, "side": side, "eager_s": ew, "compiled_s": cw, "eager_cpu_s": ec, "compiled_cpu_s": cc,
            "warmup_s": warm_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", nargs="+", default=["mini", "sd15"], choices=["mini", "sd15"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mini-size", type=int, default=None, help="pixels (default: the model's 64)")
    ap.add_argument("--sd15-size", type=int, default=256, help="pixels (default 256: CPU time; 512 is SD 1.5's own)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    print(f"torch {torch.__version__}, {os.cpu_count()} CPU(s)", flush=True)
    for name in args.bases:
        pipe, cn, side = (mini_case(args.mini_size) if name == "mini" else sd15_case(args.sd15_size))
        bench(name, pipe, cn, side, args)


if __name__ == "__main__":
    main()
