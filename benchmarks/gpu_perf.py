"""GPU performance on Stable Diffusion 1.5-shaped random weights: sampling it/s (ours vs diffusers)
and training samples/s + peak memory, in one run. Results go to OUT/gpu_perf.json (rewritten after
every measurement, so a run cut short still leaves what it measured) and docs/performance.md reads them.

Sampling (in this process): the U-Net, VAE and CLIP text encoder are built from SD1.5's configs with
random weights (`controlnet.training.base.build_base("sd15")`), one or two ControlNets by
`ControlNet.from_unet`; fp16; 512x512; DDIM; CFG 7.5. Our `ControlPipeline` and diffusers'
`StableDiffusionControlNetPipeline` share the very same modules (the diffusers side gets
`ControlNet.to_diffusers()` copies of the same weights), the same start latents and the same hint.
Cases run round-robin after a warm-up; every call is bracketed by `torch.cuda.synchronize()`;
the median of the repeats is reported. it/s = steps / seconds of one call with output_type="latent"
(prompt encoding + hint preparation + the denoising loop, no VAE decode); the "+ decode" case is
end to end to a numpy image.

Training: `benchmarks/train_speed.py`, one fresh process per (variant, batch), bf16 autocast,
512 px, `--init-on-device`.

Transformer bases (`bench_dit`, last): Flux-dev- and SD3-medium-shaped random weights (the config
tables of `benchmarks/dit_speed.py`), one ControlNet, bf16, 1024², ours vs diffusers it/s and peak
memory (~2-3 min on an H100; `--skip-dit` leaves it out, `--dit-families flux` keeps one).

Learned detectors (`bench_detectors`, after the bases): `benchmarks/detector_speed.py NAMES --device cuda`,
ours on the GPU against ours on the CPU (all threads), real-size networks with random weights in the
published layouts, 512-px photo, wall clock (~1-2 min; `--skip-detectors`, `--detectors NAME ...`).

    python benchmarks/gpu_perf.py --out /tmp/perf              # on a CUDA machine (~5 min on an H200)
    python benchmarks/gpu_perf.py --tiny --out /tmp/perf       # CPU smoke test of the same code paths
    python benchmarks/gpu_perf.py --tiny --skip-sampling --skip-training --out /tmp/perf   # the DiT path alone
    python benchmarks/gpu_perf.py --out /tmp/perf --impls ours ours-compiled ours-cudagraphs diffusers \
        --skip-training --batches 1                            # eager vs compiled vs CUDA graphs (issue 23)

`--impls` picks the sampling sides: ours (eager), ours-compiled (`enable_compile(mode="default")`:
inductor without CUDA graphs), ours-cudagraphs (`enable_compile()`, "reduce-overhead" on CUDA),
diffusers (eager). The compiled sides share the modules; their compile happens in the warm-up round,
whose seconds are logged per side.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def log(*a) -> None:
    print(f"[{elapsed():6.1f}s]", *a, flush=True)


class Results:
    def __init__(self, path: Path):
        self.path = path
        self.data = {"env": {}, "sampling": [], "dit": [], "training": [], "detectors": [], "skipped": [],
                     "errors": []}

    def save(self) -> None:
        self.data["wall_s"] = round(elapsed(), 1)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def env_info(device: torch.device) -> dict:
    import diffusers
    import transformers

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "device": str(device)}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), sms=p.multi_processor_count)
        with contextlib.suppress(Exception):
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=20).stdout.strip()
    with contextlib.suppress(Exception):
        from controlnet.nn import ControlNet  # noqa: F401

        info["controlnet_src"] = str(Path(sys.modules["controlnet"].__file__).parent)
    return info


# ------------------------------------------------------------------ sampling


def build_sampling(shape: str, device: torch.device, dtype: torch.dtype, on_device: bool):
    from diffusers import DDIMScheduler, StableDiffusionControlNetPipeline

    from controlnet.nn import ControlNet
    from controlnet.pipeline import ControlPipeline
    from controlnet.training.base import build_base

    ctx = torch.device(device) if on_device else contextlib.nullcontext()
    with ctx:
        base = build_base(shape, seed=0)
        for m in (base.unet, base.vae, base.text_encoder):
            m.to(device, dtype).eval().requires_grad_(False)
        torch.manual_seed(1)
        cns = [ControlNet.from_unet(base.unet, vae_scale_factor=base.vae_scale_factor).to(device, dtype).eval()
               for _ in range(2)]
        theirs_cns = [c.to_diffusers().to(device, dtype).eval() for c in cns]
    ddim = DDIMScheduler.from_config(dict(base.scheduler.config))
    ours = ControlPipeline(base.unet, base.vae, base.text_encoder, base.tokenizer, ddim)

    def diffusers_pipe(nets):
        p = StableDiffusionControlNetPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet,
            controlnet=nets if len(nets) > 1 else nets[0], scheduler=DDIMScheduler.from_config(dict(ddim.config)),
            safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False)
        p.set_progress_bar_config(disable=True)
        return p

    theirs = {1: diffusers_pipe(theirs_cns[:1]), 2: diffusers_pipe(theirs_cns)}
    return base, cns, ours, theirs


def bench_sampling(args, res: Results, device, batches) -> None:
    import numpy as np
    from PIL import Image

    from controlnet.pipeline import ControlUnit

    dtype = torch.float16 if device.type == "cuda" else torch.float32
    t = time.perf_counter()
    try:
        base, cns, ours, theirs = build_sampling(args.shape, device, dtype, args.init_on_device)
    except Exception as exc:  # creating the weights on the device failed: draw them on the CPU (slower)
        log(f"building on {device} failed ({exc!r}); building on the CPU and moving")
        res.data["errors"].append({"what": "sampling init on device", "error": repr(exc)})
        base, cns, ours, theirs = build_sampling(args.shape, device, dtype, False)
    if device.type == "cuda":
        res.data["sampling_models_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
    log(f"sampling models built in {time.perf_counter() - t:.1f} s "
        f"(U-Net {sum(p.numel() for p in base.unet.parameters()) / 1e6:.0f}M, "
        f"ControlNet {sum(p.numel() for p in cns[0].parameters()) / 1e6:.0f}M params, {dtype})")
    size, steps = args.size, args.steps
    hint = Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8))
    common = dict(guidance_scale=args.cfg)

    # name -> (our units kwargs list, diffusers kwargs, number of nets on the diffusers side, output type)
    cases = {
        "1 unit": ([{}], {}, 1, "latent"),
        "2 units": ([{}, {}], {}, 2, "latent"),
        "1 unit, window 0-0.5": ([{"end": 0.5}], {"control_guidance_end": 0.5}, 1, "latent"),
        "1 unit + VAE decode": ([{}], {}, 1, "np"),
        "no unit (plain U-Net, ours)": ([], None, 0, "latent"),
    }
    if args.cases:
        cases = {k: v for k, v in cases.items() if k in args.cases}

    for batch in batches:
        if elapsed() > args.budget_s * args.sampling_share:
            res.data["skipped"].append(f"sampling batch {batch}: time budget")
            log(f"skip sampling batch {batch} (time budget)")
            continue
        g = torch.Generator().manual_seed(0)
        latents = torch.randn(batch, 4, size // 8, size // 8, generator=g).to(device, dtype)

        def run_ours(spec, batch=batch, latents=latents, pipe=ours):
            units_kw, _, _, otype = spec
            units = [ControlUnit(cns[i], hint, resize=None, **kw) for i, kw in enumerate(units_kw)]
            return pipe("a photo of a cat", units, steps=steps, scheduler="ddim", num_images=batch,
                        height=size, width=size, latents=latents.clone(), output_type=otype, progress=False, **common)

        def run_theirs(spec, batch=batch, latents=latents):
            _, kw, n, otype = spec
            image = hint if n == 1 else [hint] * n
            return theirs[n]("a photo of a cat", image=image, num_inference_steps=steps, num_images_per_prompt=batch,
                             height=size, width=size, latents=latents.clone(), output_type=otype, **common, **kw)

        def timed(fn, spec):
            return timed_call(lambda: fn(spec), device)

        runs = [(name, impl) for name, spec in cases.items() for impl in args.impls
                if not (impl == "diffusers" and spec[1] is None)]
        fns = {"ours": run_ours, "diffusers": run_theirs,
               **{k: functools.partial(run_ours, pipe=p) for k, p in compiled_sides(ours, args.impls).items()}}
        t = time.perf_counter()
        for _ in range(args.warmup):
            for name, impl in runs:
                warm = timed(fns[impl], cases[name])[0]
                if impl.startswith("ours-"):
                    log(f"batch {batch}: warm-up {name} {impl} {warm:.1f} s")
        log(f"batch {batch}: warm-up done in {time.perf_counter() - t:.1f} s")
        times = {r: [] for r in runs}
        cpus = {r: [] for r in runs}  # CPU seconds of the calling thread per call: ~ wall when the host is the bound
        peaks = {r: 0.0 for r in runs}
        for rep in range(args.repeats):
            for r in runs:  # round-robin, so a slow phase of the machine hits every case
                dt, peak, cpu = timed(fns[r[1]], cases[r[0]])
                times[r].append(dt)
                cpus[r].append(cpu)
                if peak is not None:
                    peaks[r] = max(peaks[r], peak)
            if rep + 1 >= 3 and elapsed() > args.budget_s * args.sampling_share:
                log(f"batch {batch}: stopping repeats after {rep + 1} (time budget)")
                break
        for (name, impl), ts in times.items():
            med = statistics.median(ts)
            row = {"case": name, "impl": impl, "batch": batch, "steps": steps, "size": size, "dtype": str(dtype),
                   "output_type": cases[name][3], "median_s": med, "it_per_s": steps / med,
                   "images_per_s": batch / med, "times_s": ts, "cpu_s": cpus[(name, impl)], "peak_mb": round(peaks[(name, impl)], 1) or None}
            res.data["sampling"].append(row)
            log(f"b{batch} {name:<28} {impl:<9} {med:7.3f} s  {steps / med:7.2f} it/s  peak {row['peak_mb']} MB  "
                f"host CPU {statistics.median(cpus[(name, impl)]):.3f} s")
        res.save()


def timed_call(fn, device) -> tuple[float, float | None, float]:
    """(wall seconds, peak MiB allocated on the GPU or None, CPU seconds of this thread) of one call."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    sync()
    dt, cpu = time.perf_counter() - t0, time.thread_time() - c0
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    return dt, peak, cpu


# ------------------------------------------------------------------ transformer bases


def bench_dit(args, res: Results, device) -> None:
    """Flux-dev- and SD3-medium-shaped random weights (the tables of `dit_speed.py`), one ControlNet
    (InstantX canny's 5+0 blocks / SD3's 6), bf16: our `sample_flux` / `sample_sd3` vs diffusers'
    `FluxControlNetPipeline` / `StableDiffusion3ControlNetPipeline` on the same modules and prompt
    embeddings (512 T5 tokens for Flux, 77+256 for SD3 under CFG), latents out. Weights keep their
    default initialisation (drawn in bf16 on the device: a 12B base never exists in float32)."""
    import dit_speed as dit

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    narrow = dict(heads=2, head_dim=32) if args.tiny else {}
    plans = {"flux": (dit.build_flux, dit.flux_runner, {"instantx": dit.FLUX_NETS["instantx"]}, 512),
             "sd3": (dit.build_sd3, dit.sd3_runner, {"instantx": dit.SD3_NETS["instantx"]}, 333)}
    for family in args.dit_families:
        if elapsed() > args.budget_s + args.dit_budget_s:
            res.data["skipped"].append(f"dit {family}: time budget")
            log(f"skip {family} (time budget)")
            continue
        build, runner, nets, tokens = plans[family]
        t = time.perf_counter()
        built = build(device=device, dtype=dtype, randomize=args.tiny, nets=nets, **narrow)
        params = sum(p.numel() for p in built[1].parameters()) / 1e9
        log(f"{family}: base {params:.2f}B params, ControlNet "
            f"{sum(p.numel() for p in built[2]['instantx'][0].parameters()) / 1e9:.2f}B, built in {time.perf_counter() - t:.1f} s")
        run = runner(built, ["instantx"], size=args.dit_size, steps=args.dit_steps, text_tokens=tokens)
        times = {impl: [] for impl in ("ours", "diffusers")}
        peaks = {impl: 0.0 for impl in times}
        for rep in range(args.warmup + args.dit_repeats):
            for impl in times:  # alternating, after the warm-up round(s)
                dt, peak, _ = timed_call(functools.partial(run, impl), device)
                if rep >= args.warmup:
                    times[impl].append(dt)
                    peaks[impl] = max(peaks[impl], peak or 0.0)
            if rep + 1 >= args.warmup + 2 and elapsed() > args.budget_s + args.dit_budget_s:
                log(f"{family}: stopping repeats after {rep + 1 - args.warmup} (time budget)")
                break
        for impl, ts in times.items():
            med = statistics.median(ts)
            row = {"family": family, "impl": impl, "controlnets": 1, "size": args.dit_size, "steps": args.dit_steps,
                   "dtype": str(dtype), "base_params_b": round(params, 2), "median_s": med,
                   "it_per_s": args.dit_steps / med, "times_s": ts, "peak_mb": round(peaks[impl], 1) or None}
            res.data["dit"].append(row)
            log(f"{family} {args.dit_size}px {impl:<9} {med:7.3f} s  {args.dit_steps / med:6.2f} it/s  peak {row['peak_mb']} MB")
        res.save()
        del built, run
        if device.type == "cuda":
            torch.cuda.empty_cache()


def compiled_sides(ours, impls) -> dict:
    """The compiled variants of our pipeline that `impls` asks for, sharing its modules."""
    from controlnet.pipeline import ControlPipeline

    modes = {"ours-compiled": "default", "ours-cudagraphs": None}  # None: reduce-overhead on CUDA
    sides = {}
    for impl, mode in modes.items():
        if impl in impls:
            sides[impl] = ControlPipeline(ours.unet, ours.vae, ours.text_encoder, ours.tokenizer, ours.scheduler)
            sides[impl].enable_compile(mode=mode)
    return sides


# ------------------------------------------------------------------ learned detectors


def bench_detectors(args, res: Results) -> None:
    """detector_speed.py's device comparison in a child process; its RESULT lines are kept as they come."""
    command = [sys.executable, str(HERE / "detector_speed.py"), *args.detectors, "--device", args.device,
               "--repeats", str(args.detector_repeats)]
    log("detectors:", " ".join(command[2:]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.detector_timeout_s)
        output, problem = done.stdout, done.stderr.splitlines()[-15:] if done.returncode else None
    except subprocess.TimeoutExpired as exc:  # what finished before the limit is kept
        output, problem = exc.stdout or "", [f"timed out after {args.detector_timeout_s} s"]
    output = output.decode() if isinstance(output, bytes) else output
    for line in output.splitlines():
        if line.startswith("RESULT "):
            res.data["detectors"].append(json.loads(line[7:]))
        elif line.strip():
            log(line)
    if problem:
        res.data["errors"].append({"what": "detectors", "error": problem})
    res.save()


# ------------------------------------------------------------------ training


def bench_training(args, res: Results, device, plan) -> None:
    for variant, batch in plan:
        if elapsed() + args.train_estimate_s > args.budget_s:
            res.data["skipped"].append(f"training {variant} batch {batch}: time budget")
            log(f"skip training {variant} b{batch} (time budget)")
            continue
        cmd = [sys.executable, str(HERE / "train_speed.py"), "--variant", variant, "--batch", str(batch),
               "--device", str(device), "--shape", args.train_shape, "--resolution", str(args.train_resolution),
               "--steps", str(args.train_steps), "--warmup", str(args.train_warmup),
               "--mixed-precision", args.mixed_precision, "--threads", str(args.threads)]
        if args.init_on_device:
            cmd.append("--init-on-device")
        t = time.perf_counter()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.train_timeout_s)
        except subprocess.TimeoutExpired:
            res.data["errors"].append({"what": f"training {variant} b{batch}", "error": "timeout"})
            log(f"training {variant} b{batch}: TIMEOUT")
            res.save()
            continue
        wall = time.perf_counter() - t
        line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        if done.returncode or not line:
            err = (done.stderr or done.stdout).strip().splitlines()[-15:]
            res.data["errors"].append({"what": f"training {variant} b{batch}", "error": err})
            log(f"training {variant} b{batch}: FAILED\n" + "\n".join(err))
        else:
            row = json.loads(line[0][7:])
            row.update(process_wall_s=round(wall, 1), resolution=args.train_resolution,
                       mixed_precision=args.mixed_precision, steps=args.train_steps, shape=args.train_shape)
            res.data["training"].append(row)
            log(f"training {variant:<10} b{batch}: {row['samples_per_s']:.2f} samples/s, peak {row['peak_mb']:.0f} MB "
                f"(process {wall:.0f} s)")
        res.save()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="perf-out")
    p.add_argument("--tiny", action="store_true", help="CPU smoke test: small shapes, few steps")
    p.add_argument("--device", default=None)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--cases", nargs="*", default=None)
    p.add_argument("--impls", nargs="+", default=["ours", "diffusers"],
                   choices=["ours", "ours-compiled", "ours-cudagraphs", "diffusers"], help="sampling sides to time")
    p.add_argument("--train-plan", nargs="*", default=["ours:4", "ours+ckpt:4", "diffusers:4", "ours:8", "ours+ckpt:8"],
                   help="variant:batch pairs, in the order they run")
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--train-warmup", type=int, default=2)
    p.add_argument("--mixed-precision", default="bf16")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--budget-s", type=float, default=330, help="skip what would end past this many seconds")
    p.add_argument("--sampling-share", type=float, default=0.45, help="of the budget, for the sampling part")
    p.add_argument("--train-estimate-s", type=float, default=35)
    p.add_argument("--train-timeout-s", type=float, default=150)
    p.add_argument("--skip-sampling", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--skip-dit", action="store_true", help="leave out the transformer bases (Flux, SD3)")
    p.add_argument("--dit-families", nargs="+", default=["flux", "sd3"], choices=["flux", "sd3"])
    p.add_argument("--dit-size", type=int, default=1024)
    p.add_argument("--dit-steps", type=int, default=8)
    p.add_argument("--dit-repeats", type=int, default=3)
    p.add_argument("--dit-budget-s", type=float, default=180, help="seconds the transformer bases may add to the budget")
    p.add_argument("--skip-detectors", action="store_true", help="leave out the learned detectors")
    p.add_argument("--detectors", nargs="+", default=["softedge_teed", "lineart_anime", "normal_bae", "depth_leres",
                                                       "depth_anything_v2", "seg_ufade20k", "openpose_full"])
    p.add_argument("--detector-repeats", type=int, default=3)
    p.add_argument("--detector-timeout-s", type=float, default=240)
    args = p.parse_args(argv)
    if args.tiny:
        args.device = args.device or "cpu"
        args.shape, args.size, args.steps, args.repeats = "small", 64, 2, min(args.repeats, 2)
        args.batches = [1]
        args.train_shape, args.train_resolution, args.train_steps, args.train_warmup = "tiny", 32, 1, 1
        args.train_plan = ["ours:2", "ours+ckpt:2", "diffusers:2"]
        args.init_on_device, args.threads = True, 1
        args.dit_size, args.dit_steps, args.dit_repeats = 64, 2, min(args.dit_repeats, 2)
        args.detectors, args.detector_repeats = ["softedge_teed"], 1
    else:
        args.device = args.device or "cuda"
        args.shape, args.train_shape, args.train_resolution = "sd15", "sd15", args.size
        args.init_on_device = True
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = Results(out / "gpu_perf.json")
    res.data["args"] = {k: v for k, v in vars(args).items()}
    res.data["env"] = env_info(device)
    log("env", json.dumps(res.data["env"]))
    res.save()
    if not args.skip_sampling:
        try:
            bench_sampling(args, res, device, args.batches)
        except Exception as exc:  # keep going to the training part, record the failure
            import traceback

            traceback.print_exc()
            res.data["errors"].append({"what": "sampling", "error": traceback.format_exc().splitlines()[-15:]})
            res.save()
            if device.type == "cuda":
                torch.cuda.empty_cache()
            del exc
    if device.type == "cuda":
        torch.cuda.empty_cache()  # the sampling models are gone with bench_sampling's frame
    if not args.skip_training:
        plan = [(v, int(b)) for v, b in (x.rsplit(":", 1) for x in args.train_plan)]
        bench_training(args, res, device, plan)
    if not args.skip_dit:
        try:
            bench_dit(args, res, device)
        except Exception:  # record the failure; what was measured before it stays
            import traceback

            traceback.print_exc()
            res.data["errors"].append({"what": "dit", "error": traceback.format_exc().splitlines()[-15:]})
    if not args.skip_detectors:
        bench_detectors(args, res)
    res.save()
    summary(res.data)
    return 0 if not res.data["errors"] else 1


def summary(d: dict) -> None:
    print("\n== sampling (median s per call, it/s) ==")
    rows = d["sampling"]
    for r in rows:
        if r["impl"] != "ours":
            continue
        ref = next((x for x in rows if x["impl"] == "diffusers" and x["case"] == r["case"] and x["batch"] == r["batch"]), None)
        ratio = f"speed ours/diffusers {ref['median_s'] / r['median_s']:.3f}" if ref else ""
        theirs = f"diffusers {ref['it_per_s']:6.2f} it/s" if ref else ""
        print(f"b{r['batch']} {r['case']:<28} ours {r['it_per_s']:6.2f} it/s  {theirs}  {ratio}")
    print("== transformer bases (one ControlNet) ==") if d.get("dit") else None
    for r in d.get("dit", []):
        if r["impl"] == "ours":
            ref = next((x for x in d["dit"] if x["impl"] == "diffusers" and x["family"] == r["family"]), None)
            print(f"{r['family']} {r['size']}px 1 ControlNet: ours {r['it_per_s']:6.2f} it/s peak {r['peak_mb']} MB"
                  + (f"  diffusers {ref['it_per_s']:6.2f} it/s peak {ref['peak_mb']} MB  speed ours/diffusers "
                     f"{ref['median_s'] / r['median_s']:.3f}" if ref else ""))
    print("== learned detectors (ours on the device vs ours on the CPU, wall clock) ==") if d.get("detectors") else None
    for r in d.get("detectors", []):
        print(f"{r['detector']:<20} {r['device']} {r['device_s']:.3f} s  cpu ({r['cpu_threads']} threads) "
              f"{r['cpu_s']:.3f} s  speed-up {r['cpu_s'] / r['device_s']:.1f}x")
    print("== training ==")
    for r in d["training"]:
        print(f"{r['variant']:<10} b{r['batch']}: {r['samples_per_s']:.2f} samples/s  peak {r['peak_mb']:.0f} MB")
    if d["skipped"]:
        print("skipped:", d["skipped"])
    if d["errors"]:
        print("errors:", json.dumps(d["errors"])[:3000])
    print(f"wall {d.get('wall_s')} s")


if __name__ == "__main__":
    sys.exit(main())
