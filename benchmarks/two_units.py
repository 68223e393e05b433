"""Two ControlNet units: our ControlPipeline vs diffusers' MultiControlNetModel pipeline, on the CPU.

SD 1.5's U-Net layout (four levels, attention in the first three, 2 layers per block, 13 connections)
at small widths, so the per-step fixed costs that bound the GPU runs (docs/performance.md: two units
ran 0.93x diffusers on an H200) weigh as they do there. Two measures, one run:

1. operations dispatched per sampling call (`TorchDispatchMode`: every aten op that runs, i.e. every
   kernel a GPU would launch), for 0, 1 and 2 units, ours and diffusers' — machine-independent;
2. CPU seconds per call, single thread, cases interleaved round-robin, median of the repeats.

    OMP_NUM_THREADS=1 python benchmarks/two_units.py [--size 64 --steps 10 --repeats 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

UNET = dict(  # SD 1.5's layout, narrow
    block_out_channels=(32, 64, 64, 64), layers_per_block=2, norm_num_groups=16, attention_head_dim=8, cross_attention_dim=32,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)


class OpCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket.__name__)] += 1
        return func(*args, **(kwargs or {}))


def build(size: int, widths: tuple[int, ...]):
    from controlnet.pipeline import ControlPipeline, ControlUnit
    from tiny_models import controlnet_pipeline, random_hint, start_latents, tiny_controlnet, tiny_pipeline

    UNET.update(block_out_channels=widths, norm_num_groups=min(16, min(widths) // 2))
    pipe = tiny_pipeline("sd1", unet_config=UNET)
    nets = [tiny_controlnet(pipe, seed=s) for s in (1, 2)]
    ours = ControlPipeline.from_diffusers(pipe)
    theirs = {1: controlnet_pipeline(pipe, nets[0]), 2: controlnet_pipeline(pipe, nets)}
    hint, latents = random_hint(size, size), start_latents(pipe, size, size)

    def run(impl: str, units: int, steps: int, cfg: float):
        if impl == "ours":
            return ours("a photo", [ControlUnit(nets[k], hint, resize=None) for k in range(units)], steps=steps,
                        scheduler="ddim", guidance_scale=cfg, latents=latents.clone(), output_type="latent", progress=False)
        image = hint if units == 1 else [hint] * units
        return theirs[units]("a photo", image=image, num_inference_steps=steps, guidance_scale=cfg, latents=latents.clone(),
                             output_type="latent")

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="image side in pixels (latent = size/8)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cfg", type=float, default=7.5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--widths", default="32,64,64,64", help="the U-Net's block widths; 8,8,8,8 makes the run "
                    "dispatch-bound, as a GPU at batch 1 is launch-bound")
    ap.add_argument("--top", type=int, default=8, help="op kinds listed where the two differ most")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    run = build(args.size, tuple(int(w) for w in args.widths.split(",")))
    cases = [(impl, units) for units in (1, 2) for impl in ("ours", "diffusers")]
    counts = {}
    for impl, units in cases:
        with OpCounter() as c:
            run(impl, units, args.steps, args.cfg)
        counts[(impl, units)] = c.ops
    print(f"U-Net {UNET['block_out_channels']} x{UNET['layers_per_block']} layers, {args.size} px, {args.steps} DDIM "
          f"steps, CFG {args.cfg}")
    for units in (1, 2):
        a, b = counts[("ours", units)], counts[("diffusers", units)]
        diff = sorted(set(a) | set(b), key=lambda k: -abs(a[k] - b[k]))[: args.top]
        print(f"{units} unit(s): ops per call ours {sum(a.values())}, diffusers {sum(b.values())} "
              f"({(sum(a.values()) - sum(b.values())) / args.steps:+.0f} per step); most different: "
              + ", ".join(f"{k} {a[k]}/{b[k]}" for k in diff if a[k] != b[k]))
    times = {case: [] for case in cases}
    for case in cases:
        run(*case, args.steps, args.cfg)  # warm-up
    for _ in range(args.repeats):
        for case in cases:
            t0 = time.process_time()
            run(*case, args.steps, args.cfg)
            times[case].append(time.process_time() - t0)
    for units in (1, 2):
        ta, tb = (statistics.median(times[(impl, units)]) for impl in ("ours", "diffusers"))
        print(f"{units} unit(s): ours {ta:.3f} s, diffusers {tb:.3f} s per call (median of {args.repeats}); "
              f"speed ours/diffusers {tb / ta:.3f}")


if __name__ == "__main__":
    main()
