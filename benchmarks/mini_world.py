"""The miniature model's claims, measured from pixels on held-out world samples.

    python benchmarks/mini_world.py                    # the built-in model; --model FOLDER for another
    python benchmarks/mini_world.py --n 32 --json out.json --plot out.png

- prompt adherence of the base model: share of single-shape samples whose shape and background
  have the colours the caption names (`controlnet.metrics.adherence`);
- control fidelity of each ControlNet against the same prompts and seeds without control:
  edges  -> edge F1 between canny of the picture and the condition (`controlnet.evaluation`'s one
            definition: within 2 px, as the trainer's monitor and `controlnet evaluate` report it);
  seg    -> pixel accuracy / mIoU of the colour-implied label map: each pixel is named by its nearest
            world colour and compared with the colour the scene puts there (shape or background);
  depth  -> the same label accuracy, and the depth-order error: for every pair of overlapping shapes
            whose colours differ, is the shape drawn in front (brighter in the depth map) the one
            whose colour covers their overlap?
- seconds per image on CPU, with and without control.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def edge_score(image: np.ndarray, condition: np.ndarray) -> float:
    """The one edge fidelity definition (`controlnet.evaluation`): canny re-detected, F1 within 2 px."""
    from controlnet.evaluation import control_fidelity

    return control_fidelity("canny", image, condition)


def generate(pipe, samples, unit=None, steps=20, cfg=5.0, batch=16, seed=0):
    from controlnet.pipeline import ControlUnit

    out, start = [], time.perf_counter()
    for b in range(0, len(samples), batch):
        chunk = samples[b: b + batch]
        units = [ControlUnit(unit[0], [s.conditions[unit[1]] for s in chunk], resize=None)] if unit else []
        images = pipe([s.caption for s in chunk], units=units, steps=steps, guidance_scale=cfg, seed=seed + b,
                      output_type="np", progress=False).images
        out += [(img * 255).round().astype(np.uint8) for img in images]
    return out, (time.perf_counter() - start) / len(samples)


def run(model: Path, n: int, steps: int, cfg: float) -> dict:
    from controlnet.assets import HELD_OUT_SEED, available_controlnets, mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.metrics.adherence import adherence
    from controlnet.metrics.world import label_scores, order_errors
    from controlnet.pipeline import ControlPipeline
    from controlnet.world.world import World

    pipe = ControlPipeline.from_pretrained(model)
    size = pipe.vae_scale_factor * pipe.unet.config.sample_size
    single = list(World(seed=HELD_OUT_SEED, size=size, min_shapes=1, max_shapes=1).take(n, start=20_000))
    images, sec = generate(pipe, single, steps=steps, cfg=cfg)
    results = {"model": str(model), "n": n, "steps": steps, "cfg": cfg, "threads": torch.get_num_threads(),
               "adherence_single_shape": adherence(images, [s.scene for s in single]), "sec_per_image": sec}
    samples = list(World(seed=HELD_OUT_SEED, size=size).take(n, start=10_000))
    plain, _ = generate(pipe, samples, steps=steps, cfg=cfg)
    for condition in available_controlnets(model):
        cn = load_controlnet(mini_controlnet_dir(condition, model))
        controlled, sec_c = generate(pipe, samples, unit=(cn, condition), steps=steps, cfg=cfg)
        row = {"sec_per_image": sec_c}
        for tag, imgs in (("controlled", controlled), ("baseline", plain)):
            acc, miou = zip(*(label_scores(img, s) for img, s in zip(imgs, samples)))
            row[f"{tag}_pixel_accuracy"], row[f"{tag}_miou"] = float(np.mean(acc)), float(np.mean(miou))
            if condition == "edges":
                row[f"{tag}_edge_f1"] = float(np.mean([edge_score(img, s.conditions["edges"]) for img, s in zip(imgs, samples)]))
            if condition == "depth":
                wrong, judged = np.sum([order_errors(img, s) for img, s in zip(imgs, samples)], axis=0)
                row[f"{tag}_depth_order_error"] = float(wrong / max(judged, 1))
                row["depth_pairs_judged"] = int(judged)
        results[condition] = row
    return results


def report(r: dict) -> str:
    lines = [f"model {r['model']}: {r['n']} held-out samples per figure, {r['steps']} DDIM steps, CFG {r['cfg']}, "
             f"{r['threads']} thread(s)",
             f"base model prompt adherence (single shape): {r['adherence_single_shape']:.1%}   "
             f"{r['sec_per_image']:.3f} s/image without control"]
    for condition in ("edges", "seg", "depth"):
        if condition not in r:
            continue
        row = r[condition]
        metrics = sorted({k.split("_", 1)[1] for k in row if k.startswith("controlled_")})
        parts = [f"{m} {row['controlled_' + m]:.3f} vs {row['baseline_' + m]:.3f}" for m in metrics]
        lines.append(f"{condition:>6} ControlNet (controlled vs uncontrolled): " + ", ".join(parts)
                     + f"; {row['sec_per_image']:.3f} s/image")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = []
    for condition, metric in (("edges", "edge_f1"), ("seg", "pixel_accuracy"), ("seg", "miou"),
                              ("depth", "pixel_accuracy"), ("depth", "depth_order_error")):
        if condition in r:
            bars.append((f"{condition}\n{metric}", r[condition][f"controlled_{metric}"], r[condition][f"baseline_{metric}"]))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    x = np.arange(len(bars))
    ax.bar(x - 0.2, [b[1] for b in bars], 0.4, label="with ControlNet")
    ax.bar(x + 0.2, [b[2] for b in bars], 0.4, label="without (same prompt, seed)")
    ax.set_xticks(x, [b[0] for b in bars], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(f"miniature world, {r['n']} held-out samples; base adherence {r['adherence_single_shape']:.0%}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    from controlnet.assets import resolve_model

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mini")
    p.add_argument("--n", type=int, default=64, help="held-out samples per figure")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the figures here too")
    p.add_argument("--plot", help="write a bar chart here (PNG)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    r = run(resolve_model(args.model), args.n, args.steps, args.cfg)
    print(report(r))
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2) + "\n")
    if args.plot:
        plot(r, Path(args.plot))


if __name__ == "__main__":
    main()
