"""Training throughput and peak memory: our step against diffusers' `train_controlnet.py` step.

    python benchmarks/train_speed.py                                   # CPU, SD-like small shapes
    python benchmarks/train_speed.py --device cuda --shape sd15 --batch 4 8 --init-on-device

Variants, each in a fresh process (so peak memory is its own), on identical random weights and batches:
- diffusers: the step of diffusers' examples/controlnet/train_controlnet.py, re-implemented faithfully:
  `vae.encode(...).latent_dist.sample()` and the text encoder every step, diffusers' `ControlNetModel`,
  the full `UNet2DConditionModel` forward with residuals, grad-enabled, MSE, backward, clip 1.0, AdamW.
- ours: `ControlledDenoiser` (locked encoder under no_grad, decoder with grad), encoders every step.
- ours+cache: the same with VAE posteriors and text embeddings read from a warm `FeatureCache`.
- ours+ckpt (CUDA or --checkpointing): + gradient checkpointing of the ControlNet and the U-Net decoder.
- ours+foreach, ours+loop (ask for them): ours with an unfused AdamW (foreach=True; foreach=False, the
  per-tensor loop that is torch's default on a CPU) instead of the fused one `make_optimizer` picks, to
  measure what the fused optimizer buys on this device.
- ours+cl (ask for it): ours with the ControlNet and U-Net in channels-last memory format.
--rounds N runs the variants round-robin N times (interleaved, so a busy machine's load falls on all of
them alike) and reports medians; on a shared CPU compare process CPU seconds per step, not wall time.
Memory: CPU reports peak RSS growth over the loaded models; CUDA reports `max_memory_allocated`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def setup(args):
    from controlnet.nn import ControlNet
    from controlnet.training.base import build_base

    # --init-on-device: draw the random weights on the device itself (SD1.5 shapes take ~30 s on a CPU)
    def build(on_device: bool):
        with torch.device(args.device) if on_device else contextlib.nullcontext():
            base = build_base(args.shape, seed=0).lock()
            torch.manual_seed(0)
            return base, ControlNet.from_unet(base.unet, vae_scale_factor=base.vae_scale_factor)

    try:
        base, cn = build(getattr(args, "init_on_device", False))
    except Exception as exc:  # fall back to drawing them on the CPU
        if not getattr(args, "init_on_device", False):
            raise
        print(f"init on {args.device} failed ({exc!r}); building on the CPU", file=sys.stderr)
        base, cn = build(False)
    g = torch.Generator().manual_seed(1)
    res = args.resolution
    images = torch.rand(args.batch, 3, res, res, generator=g) * 2 - 1
    hints = torch.rand(args.batch, 3, res, res, generator=g)
    prompts = [f"a photo number {i}" for i in range(args.batch)]
    return base, cn, images, hints, prompts


def run_variant(args) -> dict:
    torch.set_num_threads(args.threads)
    import torch.nn.functional as F

    from controlnet.pipeline.text import encode_sd
    from controlnet.training.cache import FeatureCache
    from controlnet.training.denoiser import ControlledDenoiser
    from controlnet.training.step import encode_images

    device = torch.device(args.device)
    dtype = {"no": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.mixed_precision]
    base, cn, images, hints, prompts = setup(args)
    for m in (base.vae, base.text_encoder, base.unet):
        m.to(device, dtype)
    cn.to(device).train()
    images, hints = images.to(device), hints.to(device)
    sched = base.scheduler
    scale = base.latent_scale
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)

    if args.variant == "diffusers":
        with torch.device(device) if args.init_on_device else contextlib.nullcontext():
            model = cn.to_diffusers().to(device).train()
        params = list(model.parameters())

        def step():
            latents = base.vae.encode(images.to(dtype)).latent_dist.sample() * scale
            noise = torch.randn_like(latents)
            t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=device).long()
            noisy = sched.add_noise(latents, noise, t)
            ids = base.tokenizer(prompts, max_length=base.tokenizer.model_max_length, padding="max_length",
                                 truncation=True, return_tensors="pt").input_ids.to(device)
            ehs = base.text_encoder(ids, return_dict=False)[0]
            with autocast:
                down, mid = model(noisy, t, encoder_hidden_states=ehs, controlnet_cond=hints.to(dtype),
                                  return_dict=False)
                pred = base.unet(noisy, t, encoder_hidden_states=ehs,
                                 down_block_additional_residuals=[s.to(dtype) for s in down],
                                 mid_block_additional_residual=mid.to(dtype), return_dict=False)[0]
            return F.mse_loss(pred.float(), noise.float(), reduction="mean")
    else:
        model = cn
        if args.variant == "ours+ckpt":
            cn.enable_gradient_checkpointing()
        if args.variant == "ours+cl":
            cn.to(memory_format=torch.channels_last)
            base.unet.to(memory_format=torch.channels_last)
        denoiser = ControlledDenoiser(cn, base.unet, checkpoint_decoder=args.variant == "ours+ckpt")
        params = list(cn.parameters())
        cache = None
        keys = [f"img{i:04d}" for i in range(args.batch)]
        if args.variant == "ours+cache":
            cache = FeatureCache(tempfile.mkdtemp(prefix="cache-"), "vae", "text")
            cache.posterior(keys, images, lambda x: encode_images(base.vae, x))  # warm it
            cache.text(prompts, lambda p: encode_sd(base.text_encoder, base.tokenizer, p))

        def step():
            if cache is not None:
                mean, std = cache.posterior(keys, images, None)
                ehs = cache.text(prompts, None).to(device)
            else:
                mean, std = encode_images(base.vae, images)
                ehs = encode_sd(base.text_encoder, base.tokenizer, prompts)
            latents = (mean + std * torch.randn_like(mean)) * scale
            noise = torch.randn_like(latents)
            t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=device).long()
            noisy = sched.add_noise(latents, noise, t)
            with autocast:
                pred = denoiser(noisy, t, ehs, hints)
            return F.mse_loss(pred.float(), noise.float())

    if args.variant == "diffusers":
        opt = torch.optim.AdamW(params, lr=1e-5)  # the script's optimizer
    elif args.variant in ("ours+foreach", "ours+loop"):  # the loop's settings, but not fused
        opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=1e-2, foreach=args.variant == "ours+foreach")
    else:
        from controlnet.training.config import TrainConfig
        from controlnet.training.loop import make_optimizer

        opt = make_optimizer(TrainConfig(learning_rate=1e-5), [{"params": params, "lr": 1e-5}])  # the loop's

    def train_step():
        loss = step()
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        train_step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_mem = torch.cuda.memory_allocated() / 2**20
    else:
        base_mem = rss_mb()
    t0, c0, p0 = time.perf_counter(), time.thread_time(), time.process_time()
    for _ in range(args.steps):
        loss = train_step()
    sync()
    # host CPU seconds: of the Python thread alone (CUDA backward runs on autograd's own thread) and of the process
    dt, host, proc = time.perf_counter() - t0, time.thread_time() - c0, time.process_time() - p0
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        mem = {"peak_mb": round(peak, 1), "peak_over_models_mb": round(peak - base_mem, 1)}
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        mem = {"peak_mb": round(peak, 1), "peak_over_models_mb": round(peak - base_mem, 1)}
    return {"variant": args.variant, "batch": args.batch, "samples_per_s": args.batch * args.steps / dt,
            "loss": float(loss), "step_s": dt / args.steps, "main_thread_cpu_s_per_step": host / args.steps,
            "process_cpu_s_per_step": proc / args.steps, **mem}


def run_one(args, variant: str, batch: int) -> dict:
    """One variant at one batch in a fresh process (its peak memory is its own)."""
    cmd = [sys.executable, __file__, "--variant", variant, "--batch", str(batch), "--device", args.device,
           "--shape", args.shape, "--resolution", str(args.resolution), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--mixed-precision", args.mixed_precision,
           "--threads", str(args.threads)] + (["--init-on-device"] if args.init_on_device else [])
    done = subprocess.run(cmd, capture_output=True, text=True)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not line:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        return {"variant": variant, "batch": batch, "error": done.stderr.strip().splitlines()[-1:]}
    print(line[0], file=sys.stderr, flush=True)
    return json.loads(line[0][7:])


def summarize(runs: list[dict]) -> dict:
    """Medians over the rounds of one variant and batch (the error, if any round failed)."""
    bad = [r for r in runs if "error" in r]
    if bad:
        return bad[0]
    out = dict(runs[0], rounds=len(runs))
    for key, value in runs[0].items():
        if isinstance(value, float):
            out[key] = statistics.median(r[key] for r in runs)
    out["process_cpu_s_per_step_all"] = [round(r["process_cpu_s_per_step"], 3) for r in runs]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", default=None, help="tiny, small (CPU default) or sd15 (CUDA default)")
    p.add_argument("--batch", type=int, nargs="+", default=None)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--mixed-precision", default=None, choices=("no", "bf16", "fp16"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", default=None)
    p.add_argument("--rounds", type=int, default=1, help="run the variants round-robin this many times; medians")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--init-on-device", action="store_true",
                   help="create the random weights directly on --device (fast for sd15 on CUDA)")
    p.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.shape = args.shape or ("sd15" if cuda else "small")
    args.resolution = args.resolution or {"tiny": 32, "small": 128, "sd15": 512}[args.shape]
    args.steps = args.steps or (10 if cuda else 4)
    args.mixed_precision = args.mixed_precision or ("bf16" if cuda else "no")
    if args.variant:
        args.batch = args.batch[0]
        print("RESULT " + json.dumps(run_variant(args)), flush=True)
        return 0
    batches = args.batch or ([4, 8] if cuda else [4])
    variants = args.variants or ["diffusers", "ours", "ours+cache"] + (["ours+ckpt"] if cuda else [])
    runs = []
    for _ in range(args.rounds):  # round-robin: each round runs every variant once
        for batch in batches:
            for variant in variants:
                runs.append(run_one(args, variant, batch))
    results = [summarize([r for r in runs if r["variant"] == v and r["batch"] == b]) for b in batches for v in variants]
    print(f"shape={args.shape} resolution={args.resolution} device={args.device} "
          f"mixed_precision={args.mixed_precision} steps={args.steps} threads={args.threads}")
    print(f"{'variant':<13} {'batch':>5} {'samples/s':>10} {'vs diffusers':>13} {'CPU s/step':>11} "
          f"{'CPU vs diffusers':>17} {'peak MB':>9} {'step MB':>9}")
    for r in results:
        if "error" in r:
            print(f"{r['variant']:<13} {r['batch']:>5} failed: {r['error']}")
            continue
        ref = next((x for x in results if x["variant"] == "diffusers" and x["batch"] == r["batch"] and "error" not in x),
                   None)
        speedup = f"{r['samples_per_s'] / ref['samples_per_s']:.2f}x" if ref else "-"
        cpu = r["process_cpu_s_per_step"]
        cpu_ratio = f"{ref['process_cpu_s_per_step'] / cpu:.2f}x" if ref else "-"  # above 1: ours needs less CPU
        print(f"{r['variant']:<13} {r['batch']:>5} {r['samples_per_s']:>10.2f} {speedup:>13} {cpu:>11.3f} "
              f"{cpu_ratio:>17} {r['peak_mb']:>9.0f} {r['peak_over_models_mb']:>9.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
