"""Seconds per image: one union ControlNet pass with 2 conditions vs two ControlNets, one run.

The issue's claim (wave3_families.md §3.3, counted in FLOPs on SDXL at 1024²): a union pass with two
conditions costs about +2% over one condition, two ControlNets +100%. This measures the time on
this machine with an SDXL-shaped random base (text-time embedding, cross-attention in the deeper
levels, transformer depth growing with depth) small enough for a CPU, end to end through
`ControlPipeline` (prompt encoding, sampling with CFG, VAE decode). Cases alternate; each is timed
in CPU seconds of this process and the fastest of the repeats is kept, so other jobs on a shared
machine inflate no side. Prints s/img for: the base alone, a union with 1 condition, a union with
2 conditions, two plain ControlNets; then the ratios, total and for the control part alone
(s/img minus the base's).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/union_speed.py [--steps 4 --size 256 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared tiny-model builders

import torch  # noqa: E402

from controlnet.pipeline import ControlPipeline, ControlUnit  # noqa: E402
from tiny_models import random_hint, start_latents, tiny_controlnet, tiny_pipeline, tiny_union  # noqa: E402

# SDXL's layout (no attention in the first level, deeper transformers further down), small widths
UNET = dict(
    block_out_channels=(64, 128, 256), layers_per_block=2, norm_num_groups=16, cross_attention_dim=64,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 2), attention_head_dim=(2, 4, 8),
)


# SDXL's ControlNet config (diffusers' controlnet-*-sdxl-1.0 config.json), for the FLOP count
SDXL = dict(
    block_out_channels=(320, 640, 1280), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
    cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, layers_per_block=2,
)


def sdxl_tflops() -> dict:
    """TFLOP of one ControlNet forward (one sample) at SDXL's real shapes, 1024², counted on the meta
    device (nothing allocated): plain ControlNet, union with 1 and 2 conditions; with the hint
    encoder (one call per image) and without (each sampling step)."""
    from torch.utils.flop_counter import FlopCounterMode

    from controlnet.nn import ControlNet
    from controlnet.nn.union import UnionControlNet

    with torch.device("meta"):
        plain, union = ControlNet(**SDXL), UnionControlNet(**SDXL, num_control_type=8)
        x, hint = torch.randn(1, 4, 128, 128), torch.randn(1, 3, 1024, 1024)
        common = dict(timestep=torch.ones(1), encoder_hidden_states=torch.randn(1, 77, 2048),
                      added_cond_kwargs={"text_embeds": torch.randn(1, 1280), "time_ids": torch.randn(1, 6)})
        e, one, two = plain.embed_hint(hint), union.embed_conditions([hint], [1]), union.embed_conditions([hint, hint], [1, 3])
    runs = {
        "ControlNet": lambda: plain(x, hint=hint, **common),
        "union, 1 condition": lambda: union(x, hint=[hint], control_types=[1], **common),
        "union, 2 conditions": lambda: union(x, hint=[hint, hint], control_types=[1, 3], **common),
        # per sampling step: the pipeline computes E(c) once per image, not per step
        "ControlNet, E(c) cached": lambda: plain(x, hint_embedding=e, **common),
        "union, 1 condition, E(c) cached": lambda: union(x, hint_embedding=one, **common),
        "union, 2 conditions, E(c) cached": lambda: union(x, hint_embedding=two, **common),
    }
    flops = {}
    for name, run in runs.items():
        with FlopCounterMode(display=False) as counter:
            run()
        flops[name] = counter.get_total_flops() / 1e12
    return flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (latent = size/8)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--flops-only", action="store_true", help="only count the FLOPs at SDXL's shapes (no timing)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    if args.flops_only:
        print(sdxl_tflops())
        return

    pipe = tiny_pipeline("sdxl", unet_config=UNET)
    union = tiny_union(dict(pipe.unet.config), types=8, conditioning_embedding_out_channels=(48, 96, 192, 384))
    plain = [tiny_controlnet(pipe, seed=s) for s in (1, 2)]
    ours = ControlPipeline.from_diffusers(pipe)
    depth, edges = random_hint(args.size, args.size, seed=1), random_hint(args.size, args.size, seed=2)
    cases = {
        "base alone": [],
        "union, 1 condition": [ControlUnit(union, depth, control_type="depth", resize=None)],
        "union, 2 conditions": [ControlUnit(union, None, conditions=[("depth", depth), ("canny", edges)], resize=None)],
        "two ControlNets": [ControlUnit(plain[0], depth, resize=None), ControlUnit(plain[1], edges, resize=None)],
    }
    latents = start_latents(pipe, args.size, args.size)

    def timed(units) -> float:
        t0 = time.process_time()
        ours("a photo", units, steps=args.steps, guidance_scale=7.0, scheduler="euler", latents=latents.clone(), width=args.size, height=args.size,
             output_type="np", progress=False)
        return time.process_time() - t0

    print(f"SDXL-shaped U-Net {UNET['block_out_channels']}, {args.size}x{args.size} px, {args.steps} Euler steps, CFG 7, "
          f"{torch.get_num_threads()} thread(s), best of {args.repeats}, CPU seconds per image")
    for units in cases.values():  # warm-up
        timed(units)
    times = {name: [] for name in cases}
    for _ in range(args.repeats):  # round-robin, so slow phases of the machine hit every case
        for name, units in cases.items():
            times[name].append(timed(units))
    best = {name: min(t) for name, t in times.items()}
    for name, s in best.items():
        print(f"{name:<22} {s:7.3f} s/img")
    base, one, two, pair = (best[k] for k in cases)
    ratios = {
        "union 2 conditions / two ControlNets (s/img)": two / pair,
        "union 2 conditions / union 1 condition (s/img)": two / one,
        "control part: union 2 conditions / two ControlNets": (two - base) / (pair - base),
        "control part: union 2 conditions / union 1 condition": (two - base) / (one - base),
    }
    for name, r in ratios.items():
        print(f"{name:<54} {r:5.3f}")
    tflops = sdxl_tflops()
    print("SDXL shapes, 1024², one forward of one sample (meta device): "
          + ", ".join(f"{k} {v:.3f} TFLOP" for k, v in tflops.items())
          + f"; 2 conditions / 1: {tflops['union, 2 conditions'] / tflops['union, 1 condition']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds_per_image": best, "ratios": ratios,
                                               "sdxl_tflop_per_forward": tflops}, indent=2) + "\n")


if __name__ == "__main__":
    main()
