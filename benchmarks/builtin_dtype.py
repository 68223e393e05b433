"""Controlled sampling of the built-in miniature model with its ControlNet in its stored fp16 (the old
default of `load_controlnet`) and in the U-Net's fp32 (today's), in one run: s/image and the largest
pixel difference between the two.

    OMP_NUM_THREADS=1 python benchmarks/builtin_dtype.py --images 3 --repeats 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from controlnet import ControlPipeline, ControlUnit, load_controlnet
from controlnet.assets import HELD_OUT_SEED, mini_controlnet_dir, mini_model_dir
from controlnet.world import World


def seconds_per_image(pipe, unit, prompt, images: int, repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = pipe(prompt, [unit], steps=20, guidance_scale=5.0, seed=0, num_images=images, output_type="np",
                   progress=False)
        best = min(best, (time.perf_counter() - start) / images)
    return best, out.images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sample = next(World(HELD_OUT_SEED, conditions=("edges",)).take(1))
    pipe = ControlPipeline.from_pretrained(mini_model_dir())
    rows = {}
    for name, dtype in (("fp16 ControlNet (stored dtype)", torch.float16), ("fp32 ControlNet (U-Net's)", torch.float32)):
        cn = load_controlnet(mini_controlnet_dir("edges"), dtype=dtype)
        unit = ControlUnit(cn, sample.conditions["edges"], dtype=dtype)
        rows[name] = seconds_per_image(pipe, unit, sample.caption, args.images, args.repeats)
    for name, (s, _) in rows.items():
        print(f"{name:34s} {s:.3f} s/image (best of {args.repeats}, {torch.get_num_threads()} thread(s))")
    (s16, a16), (s32, a32) = rows.values()
    print(f"speed-up {s16 / s32:.2f}x; largest pixel difference {np.abs(a16 - a32).max():.4f}")


if __name__ == "__main__":
    main()
