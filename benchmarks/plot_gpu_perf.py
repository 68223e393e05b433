"""docs/performance.png from the JSON files that `benchmarks/gpu_perf.py` wrote.

    .venv/bin/python benchmarks/plot_gpu_perf.py benchmarks/results/h200-run2.json \
        --train benchmarks/results/h200-run1.json benchmarks/results/h200-run2.json --out docs/performance.png

Left: sampling it/s (median), ours vs diffusers, per case and batch, from the first JSON.
Right: training samples/s per variant and batch (the later file wins where two measured the same
variant and batch), peak GPU memory written on each bar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CASES = ["1 unit", "2 units", "1 unit, window 0-0.5", "1 unit + VAE decode"]
SHORT = {"1 unit": "1 unit", "2 units": "2 units", "1 unit, window 0-0.5": "1 unit\n0-0.5", "1 unit + VAE decode": "1 unit\n+decode"}
COLORS = {"ours": "#1f77b4", "diffusers": "#ff7f0e", "ours+ckpt": "#2ca02c"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sampling", help="gpu_perf.json whose sampling rows are plotted")
    p.add_argument("--train", nargs="+", default=None, help="gpu_perf.json files whose training rows are plotted")
    p.add_argument("--out", default="docs/performance.png")
    args = p.parse_args(argv)
    samp = json.loads(Path(args.sampling).read_text())
    train = {}
    source = {}
    for n, f in enumerate(args.train or [args.sampling], 1):
        for r in json.loads(Path(f).read_text())["training"]:
            train[(r["variant"], r["batch"])] = r
            source[r["batch"]] = n
    env = samp["env"]

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.6), gridspec_kw={"width_ratios": [1.5, 1]})
    rows = samp["sampling"]
    batches = sorted({r["batch"] for r in rows})
    labels, xs, w = [], [], 0.38
    x = 0
    for b in batches:
        for case in CASES:
            get = {r["impl"]: r for r in rows if r["batch"] == b and r["case"] == case}
            if "ours" not in get:
                continue
            for k, impl in enumerate(("ours", "diffusers")):
                if impl not in get:
                    continue
                v = get[impl]["it_per_s"]
                ax1.bar(x + (k - 0.5) * w, v, w, color=COLORS[impl], label=impl if x == 0 else None)
                ax1.text(x + (k - 0.5) * w, v + 0.3, f"{v:.1f}", ha="center", fontsize=7.5)
            if "diffusers" in get:
                ratio = get["diffusers"]["median_s"] / get["ours"]["median_s"]
                top = max(get["ours"]["it_per_s"], get["diffusers"]["it_per_s"])
                ax1.text(x, top + 2.0, f"x{ratio:.2f}", ha="center", fontsize=8, fontweight="bold")
            labels.append(f"{SHORT[case]}\nb{b}")
            xs.append(x)
            x += 1
        x += 0.4
    ax1.set_xticks(xs, labels, fontsize=7.5, rotation=0)
    ax1.set_ylabel("denoising steps per second (median)")
    s0 = rows[0]
    ax1.set_title(f"Sampling, SD1.5 shapes, {s0['size']}px fp16, {s0['steps']} DDIM steps, CFG on\n"
                  "bold: ours speed / diffusers speed", fontsize=10)
    ax1.legend(loc="upper right", fontsize=8)
    ax1.set_ylim(0, max(r["it_per_s"] for r in rows) * 1.25)

    tb = sorted({b for _, b in train})
    variants = ["ours", "ours+ckpt", "diffusers"]
    w2 = 0.27
    for i, b in enumerate(tb):
        for k, v in enumerate(variants):
            r = train.get((v, b))
            if r is None:
                continue
            xx = i + (k - 1) * w2
            ax2.bar(xx, r["samples_per_s"], w2, color=COLORS[v], label=v if i == 0 else None)
            ax2.text(xx, r["samples_per_s"] + 0.6, f"{r['samples_per_s']:.1f}\n{r['peak_mb'] / 1024:.1f} GB",
                     ha="center", fontsize=7.5)
    many = len(set(source.values())) > 1
    ax2.set_xticks(range(len(tb)), [f"batch {b}" + (f"\n(file {source[b]})" if many else "") for b in tb])
    ax2.set_ylabel("training samples per second")
    ax2.set_ylim(0, max(r["samples_per_s"] for r in train.values()) * 1.25)
    ax2.set_title("Training step, SD1.5 shapes, 512px, bf16 autocast\nlabels: samples/s and peak GPU memory "
                  "(max_memory_allocated)", fontsize=10)
    ax2.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{env.get('gpu', env['device'])}, torch {env['torch']} (CUDA {env['cuda']}), diffusers "
                 f"{env['diffusers']}; random weights", fontsize=11)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
