"""The approximate sampling modes (`controlnet.pipeline.reuse`): their price in fidelity and quality,
paired with the exact sampler, and their speed, in one run on this CPU.

Quality: one `controlnet evaluate` per mode on the built-in world (mini:edges and mini:seg rows,
held-out samples, the recommended settings: CFG 2, weight 2, 20 Euler-ancestral steps), each in
OUT/<mode>/ with its metrics.json (FID/KID with KID's interval, fidelity with 95% intervals). Then,
from the cached pictures, paired differences mode − exact over the same samples and seeds: 1-px edge
F1 for edges, label accuracy for seg (docs/mini.md's conventions), percentile bootstrap.

Speed: CPU seconds per image of one process thread, all modes interleaved round-robin, median of
the repeats, on two models: the built-in miniature (64 px, the pictures above) and an SD 1.x-shaped
U-Net with realistic proportions at small widths (`benchmarks/pipeline_speed.py`'s, 2 layers per
block, 128 px, one ControlNet; the pictures there are noise, only time counts).

    OMP_NUM_THREADS=1 python benchmarks/approx_modes.py --out approx-out [--n 64 --repeats 3]
    python benchmarks/approx_modes.py --plot approx-out/approx_modes.json --png docs/performance-approx.png
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the shared tiny-model builders

import numpy as np  # noqa: E402
import torch  # noqa: E402

MODES = {
    "exact": {},
    "reuse 2": {"control_reuse": 2},
    "reuse 3": {"control_reuse": 3},
    "reuse 2 from 0.5": {"control_reuse": 2, "control_reuse_from": 0.5},
    "cond-only": {"control_cond_only": True},
    "deepcache 2": {"deepcache": 2},
    "deepcache 3": {"deepcache": 3},
    "cond-only + reuse 2": {"control_cond_only": True, "control_reuse": 2},
}
KINDS = {"edges": "edge F1 1 px", "seg": "label accuracy"}


def folder(name: str) -> str:
    return name.replace(" + ", "+").replace(" ", "-")


def evaluate_modes(out: Path, n: int, fid: bool) -> dict:
    """One `controlnet evaluate` per mode (the exact one with the no-control row); cached pictures are reused."""
    from controlnet.evaluation import EvalSettings, evaluate

    metrics = {}
    for name, approx in MODES.items():
        t = time.perf_counter()
        settings = EvalSettings(n=n, uncontrolled=name == "exact", fid=fid, approx=approx, samples_in_grid=4)
        result = evaluate("mini", ["mini:edges", "mini:seg"], "world", out / folder(name), settings=settings, progress=False)
        metrics[name] = [r for r in result["records"] if r["prompt"] == "perfect"]
        print(f"evaluated {name} in {time.perf_counter() - t:.0f} s", flush=True)
    return metrics


def per_image(out: Path, name: str, kind: str) -> np.ndarray:
    """The paired measure of each cached picture of the mode's `kind` row (controlled, perfect prompt)."""
    from controlnet.evaluation.data import open_data
    from controlnet.images import load_image
    from controlnet.metrics.edges import edge_f1
    from controlnet.metrics.fidelity import reextract
    from controlnet.metrics.world import label_scores

    root = out / folder(name)
    settings = json.loads((root / "metrics.json").read_text())["settings"]
    key_file = next(k for k in sorted((root / "cache").glob("*/key.json"))
                    if (d := json.loads(k.read_text())).get("prompt") == "perfect" and d.get("kind") == kind and d["controlnet"])
    pictures = [np.asarray(load_image(key_file.parent / f"{settings['seed'] + i}.png")) for i in range(settings["n"])]
    data = open_data("world", pictures[0].shape[0], (kind,), None, None)
    items = [data.item(i) for i in range(len(pictures))]
    if kind == "edges":
        return np.array([edge_f1(reextract("canny", p), it.conditions["edges"], tolerance=1) for p, it in zip(pictures, items)])
    return np.array([label_scores(p, it.sample)[0] for p, it in zip(pictures, items)])


def paired(out: Path) -> dict:
    from controlnet.evaluation.stats import mean_ci

    rows = {}
    for kind in KINDS:
        exact = per_image(out, "exact", kind)
        for name in MODES:
            v = exact if name == "exact" else per_image(out, name, kind)
            m, d = mean_ci(v), mean_ci(v - exact)
            rows.setdefault(name, {})[kind] = {"value": m.value, "ci": [m.low, m.high], "diff": d.value,
                                               "diff_ci": [d.low, d.high], "relative": d.value / exact.mean()}
    return rows


# ------------------------------------------------------------------ speed


def speed_models():
    """(label, pipe, [(controlnet, hints)], size, steps, cfg, scheduler) of the two timed models."""
    from controlnet.assets import resolve_controlnet, resolve_model
    from controlnet.checkpoints import load_controlnet
    from controlnet.evaluation.data import open_data
    from controlnet.pipeline import ControlPipeline
    from pipeline_speed import UNET
    from tiny_models import random_hint, tiny_controlnet, tiny_pipeline

    mini = ControlPipeline.from_pretrained(resolve_model("mini"))
    data = open_data("world", 64, ("edges", "seg"), None, None)
    items = [data.item(i) for i in range(8)]
    units = [(load_controlnet(resolve_controlnet(f"mini:{k}")), [it.conditions[k] for it in items]) for k in KINDS]
    captions = [it.caption for it in items]
    sd = tiny_pipeline("sd1", unet_config=UNET)
    shaped = [(tiny_controlnet(sd), [random_hint(128, 128)])]
    return [("mini 64 px, 8 images x 2 rows, euler_a 20 steps, CFG 2", mini, units, captions, 64, 20, 2.0, "euler_a", 2.0),
            ("SD1.x-shaped 128 px, 1 image, ddim 20 steps, CFG 7.5", ControlPipeline.from_diffusers(sd), shaped,
             ["a photo"], 128, 20, 7.5, "ddim", 1.0)]


def time_modes(repeats: int) -> dict:
    from controlnet.pipeline import ControlUnit

    models = speed_models()
    times = {(m[0], name): [] for m in models for name in MODES}

    def run(model, approx):
        label, pipe, units, captions, size, steps, cfg, sched, weight = model
        t0 = time.process_time()
        for cn, hints in units:
            pipe(captions[: len(hints)], [ControlUnit(cn, hints, weight=weight)], steps=steps, guidance_scale=cfg,
                 scheduler=sched, seed=0, width=size, height=size, output_type="np", progress=False, approx=approx)
        return (time.process_time() - t0) / sum(len(h) for _, h in units)

    for model in models:
        run(model, {})  # warm-up
    for _ in range(repeats):  # round-robin: a slow phase of the shared machine hits every mode
        for model in models:
            for name, approx in MODES.items():
                times[(model[0], name)].append(run(model, approx))
    return {label: {name: statistics.median(times[(label, name)]) for name in MODES} for label, *_ in models}


# ------------------------------------------------------------------ report


def plot(result: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speeds = result["speed"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, kind in zip(axes, KINDS):
        for label, marker in zip(speeds, "os"):
            for name in MODES:
                x = speeds[label]["exact"] / speeds[label][name]
                r = result["paired"][name][kind]
                lo, hi = r["diff_ci"]
                ax.errorbar(x, r["diff"], yerr=[[r["diff"] - lo], [hi - r["diff"]]], fmt=marker, capsize=3,
                            color=f"C{list(MODES).index(name)}", label=name if label == next(iter(speeds)) else None,
                            mfc="none" if marker == "s" else None)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("speed-up over exact (o: mini 64 px; □: SD1.x-shaped 128 px)")
        ax.set_title(f"{kind}: {KINDS[kind]}, mode − exact (paired, 95%)")
    axes[0].set_ylabel("fidelity change")
    axes[1].legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(png, dpi=110)


def table(result: dict) -> str:
    speeds = result["speed"]
    labels = list(speeds)
    head = ("| mode | edge F1 1 px | − exact (paired) | seg label acc. | − exact (paired) | FID edges / seg | KID edges / seg | "
            + " | ".join(f"s/img {lab.split(',')[0]} (speed-up)" for lab in labels) + " |")
    lines = [head, "|" + " --- |" * (7 + len(labels))]
    for name in MODES:
        p = result["paired"][name]
        q = {(r["condition"], r["metric"]): r for r in result["metrics"][name] if r["row"] != "no control"}
        cells = [name]
        for kind in KINDS:
            r = p[kind]
            cells += [f"{r['value']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]",
                      "—" if name == "exact" else f"{r['diff']:+.3f} [{r['diff_ci'][0]:+.3f}, {r['diff_ci'][1]:+.3f}]"]
        fid = [q.get((k, "fid")) for k in KINDS]
        kid = [q.get((k, "kid")) for k in KINDS]
        cells.append(" / ".join("—" if f is None else f"{f['value']:.1f}" for f in fid))
        cells.append(" / ".join("—" if k is None else f"{k['value']:.3f} [{k['ci_low']:.3f}, {k['ci_high']:.3f}]" for k in kid))
        cells += [f"{speeds[lab][name]:.3f} ({speeds[lab]['exact'] / speeds[lab][name]:.2f}×)" for lab in labels]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="approx-out")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-fid", dest="fid", action="store_false")
    ap.add_argument("--keep-speed", action="store_true", help="reuse the timings of an earlier run in OUT")
    ap.add_argument("--plot", metavar="JSON", help="only redraw the plot and table from a finished run's JSON")
    ap.add_argument("--png", default=None, help="where the plot goes (default OUT/approx_modes.png)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    if args.plot:
        result = json.loads(Path(args.plot).read_text())
        out = Path(args.plot).parent
    else:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        saved = out / "approx_modes.json"
        old = json.loads(saved.read_text()) if args.keep_speed and saved.exists() else {}
        result = {"n": args.n, "modes": MODES, "speed": old.get("speed") or time_modes(args.repeats)}
        saved.write_text(json.dumps(result, indent=1))  # after each stage: a later failure keeps what was measured
        print(json.dumps(result["speed"], indent=1), flush=True)
        result["metrics"] = evaluate_modes(out, args.n, args.fid)
        saved.write_text(json.dumps(result, indent=1))
        result["paired"] = paired(out)
        saved.write_text(json.dumps(result, indent=1))
    plot(result, Path(args.png or out / "approx_modes.png"))
    print(table(result), end="")


if __name__ == "__main__":
    main()
