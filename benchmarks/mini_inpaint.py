"""The built-in inpainting ControlNet, measured from pixels on held-out world samples (seed 1).

    python benchmarks/mini_inpaint.py                          # n = 96, 20 DDIM steps, CFG 5
    python benchmarks/mini_inpaint.py --n 48 --json out.json
    python benchmarks/mini_inpaint.py --txt2img    # also: no inpainting sampling, ControlNet alone vs caption alone

Each sample's inpaint map hides one or two rectangles or ellipses over its shapes. The masked
region is repainted for the sample's caption with the same base model, sampler and seeds, once
with the built-in `mini:inpaint` ControlNet (hint: the picture, -1 in the mask) and once without
control; the score is label accuracy inside the mask (`controlnet.mini.inpaint.masked_label_accuracy`:
each pixel's nearest world colour against the colour the scene puts there). Means come with 95%
percentile-bootstrap intervals over samples (`controlnet.evaluation.stats`), the difference paired.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def run(model: Path, n: int, steps: int, cfg: float, batch: int = 16, start: int = 30_000,
        txt2img: bool = False, weight: float = 1.0) -> dict:
    from controlnet.assets import HELD_OUT_SEED, mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.evaluation.stats import mean_ci
    from controlnet.mini.inpaint import fill, masked_label_accuracy, repaint_mask
    from controlnet.pipeline import ControlPipeline
    from controlnet.world.world import World

    pipe = ControlPipeline.from_pretrained(model)
    cn = load_controlnet(mini_controlnet_dir("inpaint", model))
    size = pipe.vae_scale_factor * pipe.unet.config.sample_size
    samples = list(World(seed=HELD_OUT_SEED, size=size, conditions=("inpaint",)).take(n, start=start))
    scores: dict[str, list[float]] = {"controlled": [], "uncontrolled": []}
    seconds = {"controlled": 0.0, "uncontrolled": 0.0}
    for b in range(0, n, batch):
        chunk = samples[b: b + batch]
        for tag, net in (("controlled", cn), ("uncontrolled", None)):
            t0 = time.perf_counter()
            images = fill(pipe, chunk, net, weight=weight, steps=steps, guidance_scale=cfg, seed=b, progress=False)
            seconds[tag] += time.perf_counter() - t0
            scores[tag] += [masked_label_accuracy(im, s) for im, s in zip(images, chunk)]
    if txt2img:  # the same pictures drawn from scratch: the ControlNet's hint alone, or the caption alone
        for tag, net in (("controlled_txt2img", cn), ("uncontrolled_txt2img", None)):
            images = [im for b in range(0, n, batch) for im in
                      fill(pipe, samples[b: b + batch], net, weight=weight, inpaint=False, steps=steps,
                           guidance_scale=cfg, seed=b, progress=False)]
            scores[tag] = [masked_label_accuracy(im, s) for im, s in zip(images, samples)]
    diff = np.subtract(scores["controlled"], scores["uncontrolled"])
    est = {tag: mean_ci(v) for tag, v in scores.items()} | {"difference": mean_ci(diff)}
    return {"model": str(model), "n": n, "steps": steps, "cfg": cfg, "weight": weight, "world_seed": HELD_OUT_SEED, "start": start,
            "threads": torch.get_num_threads(),
            "mask_fraction": float(np.mean([repaint_mask(s).mean() for s in samples])),
            "label_accuracy_in_mask": {k: {"mean": e.value, "low": e.low, "high": e.high} for k, e in est.items()},
            "controlled_better_share": float((diff > 0).mean()),
            "sec_per_image": {k: v / n for k, v in seconds.items()}, "per_sample": scores}


def report(r: dict) -> str:
    acc = r["label_accuracy_in_mask"]
    line = "{mean:.3f} [{low:.3f}, {high:.3f}]".format
    return "\n".join([
        f"model {r['model']}: {r['n']} held-out samples (world seed {r['world_seed']}, from {r['start']}), "
        f"{r['steps']} DDIM steps, CFG {r['cfg']}, weight {r['weight']}, {r['threads']} thread(s); mask {r['mask_fraction']:.0%} of the picture",
        f"label accuracy inside the mask, 95% CI:  with mini:inpaint {line(**acc['controlled'])}   "
        f"without control {line(**acc['uncontrolled'])}",
        f"difference (paired) {line(**acc['difference'])}; controlled better on {r['controlled_better_share']:.0%} "
        f"of samples; s/image {r['sec_per_image']['controlled']:.2f} with, {r['sec_per_image']['uncontrolled']:.2f} without",
    ] + ([f"without inpainting sampling (txt2img): ControlNet hint alone {line(**acc['controlled_txt2img'])}   "
          f"caption alone {line(**acc['uncontrolled_txt2img'])}"] if "controlled_txt2img" in acc else []))


def main() -> None:
    from controlnet.assets import resolve_model
    from controlnet.files import write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mini")
    p.add_argument("--n", type=int, default=96, help="held-out samples")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--weight", type=float, default=1.0, help="the inpainting ControlNet's weight")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the figures (and per-sample scores) here too")
    p.add_argument("--txt2img", action="store_true", help="also score fills drawn without the inpainting sampling")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    r = run(resolve_model(args.model), args.n, args.steps, args.cfg, txt2img=args.txt2img, weight=args.weight)
    print(report(r))
    if args.json:
        write_json(args.json, r)


if __name__ == "__main__":
    main()
