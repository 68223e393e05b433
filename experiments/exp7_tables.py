"""Experiment 7 (paper §4.3, Tables 2–3): re-detected segmentation IoU and image quality of
uncontrolled sampling, ControlNet-lite and ControlNet — with the true pictures as the ceiling.

Two seg ControlNets trained from scratch on the built-in base with Experiment 1's exact `controlnet
train` arguments (batch 32, lr 1e-3, 50% empty prompts, seed 0, cached latents, 1,000 steps), on
8,000 seg world pairs exported like Experiment 1's edges pairs; the arms differ only in `--copy
lite`. Validation every 250 steps (no seg annotator without a learned ADE20K model: the script
scores the saved grids with the world's exact labels). Then one `controlnet evaluate --data
world:seg` run at explicit settings (CFG 5, weight 1, balanced, 20 steps, n=64; perfect and no
prompt): no control, lite, ControlNet, the shipped `mini:seg`, the true pictures (the ceiling) and
true pictures of other samples (FID's floor at this n).

    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python experiments/exp7_tables.py --arm zero   # train one arm
    nice -n 10 env OMP_NUM_THREADS=1 .venv/bin/python experiments/exp7_tables.py              # all, then evaluate
    .venv/bin/python experiments/exp7_tables.py --tiny -o /tmp/exp7                          # seconds
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import exp2_ablation as exp2  # noqa: E402

NAME = "exp7_tables"
EXP1 = common.WORK / "exp1_zero_conv"
ARMS = {"zero": [], "lite": ["--copy", "lite"]}
SIZE = 64
PROMPTS = ("perfect", "none")


def plan_for(args) -> dict:
    tiny = args.tiny
    return {"n": args.n or (2 if tiny else 64), "sample_steps": 2 if tiny else 20, "cfg": 5.0, "weight": 1.0,
            "mode": "balanced", "prompts": list(PROMPTS), "fid": not tiny, "pairs": 16 if tiny else 8000,
            "validation": 2 if tiny else 16, "validate_every": 2 if tiny else 250, "steps": 2 if tiny else None}


def export(work: Path, plan: dict) -> dict:
    """The seg world pairs (seed 0 from 0, as Exp 1's edges pairs) and 16 validation pairs (seed 1);
    the wall and CPU seconds of the training pairs' export go to time-export.json beside them."""
    from controlnet.files import write_json

    for folder, n, seed in ((work / "data", plan["pairs"], 0), (work / "validation", plan["validation"], 1)):
        if not common.export_complete(folder):
            t0, c0 = time.perf_counter(), time.process_time()
            common.run_cli(["world", "export", str(folder), "--n", str(n), "--layout", "imagefolder", "--condition", "seg",
                            "--seed", str(seed), "--start", "0", "--size", str(SIZE), "--min-shapes", "1",
                            "--max-shapes", "3"])
            if seed == 0:
                write_json(work / "time-export.json", {"wall_s": time.perf_counter() - t0,
                                                       "cpu_s": time.process_time() - c0})


def train_args(exp1_run: Path, work: Path, arm: str, plan: dict) -> list[str]:
    """Exp 1's `controlnet train` arguments (from its train_config.json) with the seg pairs, this
    experiment's cache, validation conditions and validation interval, and the arm's one flag."""
    cfg = json.loads((exp1_run / "train_config.json").read_text())
    out, val = work / f"run-{arm}", work / "validation"
    rows = [json.loads(x) for x in (val / "metadata.jsonl").read_text().splitlines() if x.strip()]
    args = ["train", "--base-model", cfg["base_model"], "--data", str(work / "data"), "--output-dir", str(out),
            "--resolution", str(cfg["resolution"]), "--batch-size", str(cfg["batch_size"]),
            "--learning-rate", str(cfg["learning_rate"]), "--empty-prompt-prob", str(cfg["empty_prompt_prob"]),
            "--max-steps", str(plan["steps"] or cfg["max_steps"]), "--checkpoint-every", str(cfg["checkpoint_every"]),
            "--keep-checkpoints", str(cfg["keep_checkpoints"]), "--report-to", "none", "--no-progress",
            "--seed", str(cfg["seed"]), "--log-every", str(cfg["log_every"]), "--cache-dir", str(work / "cache"),
            "--validate-every", str(plan["validate_every"]),
            "--num-validation-samples", str(cfg["num_validation_samples"]),
            "--validation-steps", str(cfg["validation_steps"]), "--guidance-scale", str(cfg["guidance_scale"]),
            "--validation-images", *[str(val / r["conditioning_image"]) for r in rows],
            "--validation-prompts", *[r["text"] for r in rows]]
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        args += ["--resume", "latest"]
    return args + ARMS[arm]


def seed_cache(exp1_work: Path, work: Path) -> None:
    """Hard-link Exp 1's latent/text cache into ours: the seg pairs' pictures and captions are the
    same world samples (the cache is keyed by content), so nothing is encoded twice; the trainer
    writes new entries by rename, never into a linked file."""
    import os
    import shutil

    src, dest = exp1_work / "cache", work / "cache"
    if src.is_dir() and not dest.exists():
        tmp = dest.with_name("cache.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp, copy_function=os.link)
        os.replace(tmp, dest)


def train_arm(exp1_run: Path, work: Path, arm: str, plan: dict) -> Path:
    """Train one arm (skipped when its final weights exist); its wall/CPU time beside the run."""
    from controlnet.files import write_json

    run = work / f"run-{arm}"
    if not (run / "diffusion_pytorch_model.safetensors").is_file():
        t0, c0 = time.perf_counter(), time.process_time()
        common.run_cli(train_args(exp1_run, work, arm, plan))
        timing = work / f"time-{arm}.json"
        old = json.loads(timing.read_text()) if timing.is_file() else {"wall_s": 0.0, "cpu_s": 0.0, "sessions": 0}
        write_json(timing, {"wall_s": old["wall_s"] + time.perf_counter() - t0,
                            "cpu_s": old["cpu_s"] + time.process_time() - c0, "sessions": old["sessions"] + 1})
    return run


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    common.add_arm_options(p, sorted(ARMS), "export and train this arm")
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    plan = plan_for(args)
    exp1_run = exp2.tiny_exp1(work) if args.tiny else EXP1 / "run"
    export(work, plan)
    if not args.tiny:
        seed_cache(EXP1, work)
    for arm in ([args.arm] if args.arm else [] if args.partial else list(ARMS)):
        train_arm(exp1_run, work, arm, plan)
    if args.arm:
        return 0
    weights = {arm: exp2.trained_weights(work / f"run-{arm}") for arm in ARMS}
    results = common.Results(out / f"{NAME}.json", {**plan, "weights": common.weights_id(("seg",)),
                                                    "arms": {k: exp2._arm_id(*v) for k, v in weights.items()}})
    runs = {arm: w for arm, (w, _) in weights.items()}
    if not results.done("timing"):
        results.put("timing", {part: _read(work / f"time-{part}.json") for part in ("export", *ARMS)})
    if not results.done("curves"):
        results.put("curves", {arm: read_curve(work / f"run-{arm}" / "validation") for arm in ARMS})
    truth = true_pictures(work, plan["n"])
    if not results.done("eval"):
        t0, c0 = time.perf_counter(), time.process_time()
        ev = evaluate(runs, truth, work / "eval", plan)
        results.put("eval", {**ev, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0})
    if not results.done("layout"):
        results.put("layout", layout(runs, truth["truth"], work / "eval" / "cache", plan["n"]))
    if not results.done("command"):
        results.put("command", "controlnet " + " ".join(eval_args(runs, truth, work / "eval", plan)))
    figure(results, runs, work / "eval", out)
    print(markdown(results.data["parts"]))
    return 0


def _read(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def true_pictures(work: Path, n: int) -> dict[str, Path]:
    """The held-out samples' true pictures (picture i = sample i: the ceiling row) and those of the
    next n held-out samples (independent true pictures: FID/KID's floor at this n)."""
    from controlnet.files import save_image

    items = common.world_items(2 * n)
    folders = {"truth": work / "truth", "truth_other": work / "truth_other"}
    for k, folder in enumerate(folders.values()):
        for i in range(n):
            f = folder / f"{i:04d}.png"
            if not f.is_file():
                save_image(items[k * n + i].image, f)
    return folders


def eval_args(runs: dict[str, Path], truth: dict[str, Path], out: Path, plan: dict) -> list[str]:
    """`controlnet evaluate` on world:seg: no control, each arm, the shipped mini:seg, the picture rows."""
    args = ["evaluate", "--model", "mini", "--data", "world:seg", "--prompts", ",".join(plan["prompts"]),
            "--n", str(plan["n"]), "--steps", str(plan["sample_steps"]), "--cfg", str(plan["cfg"]),
            "--weight", str(plan["weight"]), "--mode", plan["mode"], "--scheduler", "ddim", "--seed", "0",
            "-o", str(out)]
    for arm in ("lite", "zero"):
        args += ["--controlnet", f"seg={runs[arm]}"]
    args += ["--controlnet", "mini:seg"]
    for name, folder in truth.items():
        args += ["--images", f"{name}={folder}"]
    return args + ([] if plan["fid"] else ["--no-fid"])


def evaluate(runs: dict[str, Path], truth: dict[str, Path], folder: Path, plan: dict) -> dict:
    """Run `controlnet evaluate` and keep its records, rows renamed (no control, lite, zero, shipped,
    truth, truth_other)."""
    common.run_cli(eval_args(runs, truth, folder, plan))
    metrics = json.loads((folder / "metrics.json").read_text())
    names = {f"seg={run}": arm for arm, run in runs.items()} | {"no control": "no control", "mini:seg": "shipped"}
    names |= {name: name for name in truth}
    records = [{**r, "row": names[r["row"]]} for r in metrics["records"]]
    return {"settings": metrics["settings"], "records": records, "not_computed": metrics["not_computed"]}


def layout_miou(image, sample) -> float:
    """Colour-blind re-detected layout: each true region (background, each visible shape) is matched
    to the world colour that covers most of it in the picture, and scored by the IoU of the region
    with all pixels of that colour; the mean over regions. Unlike `label_miou` it needs no colour
    from the prompt, so it also judges the layout of pictures sampled without one; two regions of
    one colour share their pixels, so even true pictures can score below 1 (the re-detector's limit)."""
    from controlnet.metrics.world import colour_names

    names, labels = colour_names(image), sample.labels
    ious = []
    for region in np.unique(labels):
        inside = labels == region
        colours, counts = np.unique(names[inside], return_counts=True)
        pred = names == colours[counts.argmax()]
        ious.append((inside & pred).sum() / (inside | pred).sum())
    return float(np.mean(ious))


def per_picture(runs: dict[str, Path], truth: Path, cache: Path, n: int) -> dict:
    """{(row, prompt): {metric: [score of picture i]}} for label and layout mIoU, from the pictures
    evaluate drew (picture i = held-out sample i, seed i, in every row) and the true pictures."""
    from controlnet.images import to_rgb8
    from controlnet.metrics.world import label_scores

    items, out = common.world_items(n), {}
    for prompt in PROMPTS:
        folders = {**_cached_rows(cache, runs, prompt), "truth": truth}
        for row, folder in folders.items():
            files = [folder / (f"{i:04d}.png" if row == "truth" else f"{i}.png") for i in range(n)]
            if all(f.is_file() for f in files):
                pics = [to_rgb8(f) for f in files]
                out[row, prompt] = {"layout_miou": [layout_miou(p, it) for p, it in zip(pics, items)],
                                    "label_miou": [label_scores(p, it)[1] for p, it in zip(pics, items)]}
    return out


def layout(runs: dict[str, Path], truth: Path, cache: Path, n: int) -> dict:
    """`layout_miou` of every sampled row and the true pictures with intervals, and paired
    differences (the same samples and seeds in every row) of label and layout mIoU between rows."""
    scores = per_picture(runs, truth, cache, n)
    records = [{"row": row, "prompt": prompt, "metric": "layout_miou", **common.estimate(v["layout_miou"])}
               for (row, prompt), v in scores.items()]
    paired = [{"a": a, "b": b, "prompt": prompt, "metric": m,
               **common.estimate(np.subtract(scores[a, prompt][m], scores[b, prompt][m]))}
              for prompt in PROMPTS for a, b in PAIRS for m in ("label_miou", "layout_miou")
              if (a, prompt) in scores and (b, prompt) in scores]
    return {"records": records, "paired": paired}


PAIRS = (("zero", "lite"), ("lite", "no control"), ("zero", "no control"), ("zero", "shipped"))


def read_curve(folder: Path) -> list[dict]:
    """Label accuracy, mIoU (the world's exact colour labels) and layout mIoU of every validation grid (rows:
    condition | with caption | no prompt; condition i is world seed 1, sample i)."""
    from controlnet.images import to_rgb8
    from controlnet.metrics.world import label_scores
    from controlnet.world import World

    world = World(seed=1, size=SIZE)
    points = []
    for png in sorted(folder.glob("step-*.png")) if folder.is_dir() else []:
        grid = to_rgb8(png)
        scores = {f"{m}_{p}": [] for m in ("accuracy", "miou", "layout") for p in ("prompt", "empty")}
        for i, r in enumerate(range(0, grid.shape[0], SIZE)):
            row = grid[r:r + SIZE]
            for k, name in ((1, "prompt"), (2, "empty")):
                picture = row[:, k * SIZE:(k + 1) * SIZE]
                acc, miou = label_scores(picture, world[i])
                scores[f"accuracy_{name}"].append(acc)
                scores[f"miou_{name}"].append(miou)
                scores[f"layout_{name}"].append(layout_miou(picture, world[i]))
        points.append({"step": int(png.stem.split("-")[1]), **{k: common.estimate(v) for k, v in scores.items()}})
    return points


ROWS = ("no control", "lite", "zero", "shipped", "truth")
LABELS = {"no control": "no control", "lite": "ControlNet-lite", "zero": "ControlNet (zero conv)",
          "shipped": "shipped mini:seg", "truth": "true pictures (ceiling)",
          "truth_other": "true pictures of other samples (FID floor)"}
TABLE2 = ("label_miou", "layout_miou", "label_accuracy")
TABLE3 = ("fid", "kid", "prompt_adherence", "clip_score")


def _records(parts: dict) -> list[dict]:
    """evaluate's records and the script's own layout scores."""
    return parts["eval"]["records"] + parts.get("layout", {}).get("records", [])


def _rows(recs, metric, prompt) -> dict:
    return {r["row"]: r for r in recs if r["metric"] == metric and r["prompt"] == prompt}


def markdown(parts: dict) -> str:
    """Table 2 (re-detected label mIoU and accuracy) and Table 3 (FID, KID, adherence), per prompt."""
    recs, head, lines = _records(parts), [], []
    rows = ROWS + ("truth_other",)
    for title, metrics, table_rows in (("Table 2", TABLE2, ROWS), ("Table 3", TABLE3, rows)):
        cols = [(m, p) for m in metrics for p in PROMPTS if _rows(recs, m, p)]
        if not cols:
            continue
        head = [f"| {title} | " + " | ".join(f"{m} ({p})" for m, p in cols) + " |", "|---" * (len(cols) + 1) + "|"]
        lines += ["", *head]
        for row in table_rows:
            lines.append(f"| {LABELS[row]} | " + " | ".join(exp2._cell(_rows(recs, m, p).get(row)) for m, p in cols)
                         + " |")
    paired = parts.get("layout", {}).get("paired", [])
    if paired:
        lines += ["", "| paired difference (same samples, seeds) | prompt | label mIoU | layout mIoU |", "|---|---|---|---|"]
        got = {(r["a"], r["b"], r["prompt"], r["metric"]): r for r in paired}
        lines += [f"| {LABELS[a]} − {LABELS[b]} | {p} | {exp2._cell(got.get((a, b, p, 'label_miou')))} | "
                  f"{exp2._cell(got.get((a, b, p, 'layout_miou')))} |" for p in PROMPTS for a, b in PAIRS
                  if (a, b, p, "layout_miou") in got]
    for arm, curve in parts["curves"].items():
        keys = ("miou_prompt", "layout_prompt", "layout_empty", "accuracy_prompt")
        lines += ["", f"| step ({LABELS[arm]}) | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {pt['step']} | " + " | ".join(exp2._cell(pt.get(k)) for k in keys) + " |" for pt in curve]
    return "\n".join(lines)


def figure(results, runs: dict[str, Path], eval_folder: Path, out: Path) -> None:
    """Bars with 95% intervals (label mIoU and accuracy by prompt; FID, KID, adherence with the
    caption) and a sample grid: seg map | true picture | no control | lite | ControlNet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controlnet.files import save_figure

    recs = _records(results.data["parts"])
    panels = [(m, p) for m in TABLE2 for p in PROMPTS] + [(m, "perfect") for m in ("fid", "kid", "prompt_adherence")]
    panels = [(m, p) for m, p in panels if _rows(recs, m, p)]
    curve_keys = (("miou_prompt", "label mIoU, caption"), ("layout_empty", "layout mIoU, no prompt"))
    cols = min(5, len(panels) + len(curve_keys))
    nrows = -(-(len(panels) + len(curve_keys)) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.7 * cols, 3.3 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels) + len(curve_keys):]:
        ax.axis("off")
    for ax, (key, title) in zip(axes.ravel()[len(panels):], curve_keys):
        _curve_panel(ax, results.get("curves"), key, f"validation (16): {title}")
    for ax, (metric, prompt) in zip(axes.ravel(), panels):
        got = _rows(recs, metric, prompt)
        rows = [r for r in ROWS + ("truth_other",) if r in got and not _meaningless(r, metric)]
        vals = [got[r]["value"] for r in rows]
        err = [[v - exp2._or(got[r]["ci_low"], v) for v, r in zip(vals, rows)],
               [exp2._or(got[r]["ci_high"], v) - v for v, r in zip(vals, rows)]]
        ax.bar(range(len(rows)), vals, yerr=err, capsize=2, color=[f"C{ROWS.index(r) if r in ROWS else 5}" for r in rows])
        ax.set_xticks(range(len(rows)), [LABELS[r].split(" (")[0] for r in rows], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{metric}, {prompt} prompt" + (" (no interval)" if metric == "fid" else ""), fontsize=8)
    head = results.data["header"]
    fig.suptitle(f"seg, n={head['n']}, CFG {head['cfg']:g}, weight {head['weight']:g}, training steps: "
                 + ", ".join(f"{LABELS[a]} {v['step']}" for a, v in head["arms"].items()), fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / f"{NAME}.png")
    sample_grid(runs, eval_folder, head["n"], out)


def _curve_panel(ax, curves: dict, key: str, title: str) -> None:
    """One validation score against training step, each arm with its 95% band."""
    for arm, points in curves.items():
        x = [p["step"] for p in points]
        ax.plot(x, [p[key]["value"] for p in points], marker=".", color=f"C{ROWS.index(arm)}", label=LABELS[arm])
        ax.fill_between(x, [p[key]["ci_low"] for p in points], [p[key]["ci_high"] for p in points],
                        color=f"C{ROWS.index(arm)}", alpha=0.15)
    ax.set_xlabel("training step", fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6)


def _meaningless(row: str, metric: str) -> bool:
    """The truth row is the FID reference itself (0 by construction); the other samples' pictures
    answer other layouts (their labels scores mean nothing)."""
    return (row == "truth" and metric in ("fid", "kid")) or (row == "truth_other" and metric not in ("fid", "kid"))


def sample_grid(runs: dict[str, Path], eval_folder: Path, n: int, out: Path, k: int = 6) -> None:
    """Up to k held-out samples (perfect prompt): seg map | truth | no control | lite | ControlNet."""
    from controlnet.files import save_image
    from controlnet.images import to_rgb8
    from controlnet.world.grid import image_grid

    folders = _cached_rows(eval_folder / "cache", runs)
    if not {"no control", "lite", "zero"} <= set(folders):
        return
    items = common.world_items(min(k, n))
    grid = [[common.rgb(it.conditions["seg"]), it.image]
            + [to_rgb8(folders[r] / f"{i}.png") for r in ("no control", "lite", "zero")] for i, it in enumerate(items)]
    save_image(image_grid(grid, scale=2), out / f"{NAME}_samples.png")


def _cached_rows(cache: Path, runs: dict[str, Path], prompt: str = "perfect") -> dict[str, Path]:
    """evaluate's picture folders of the world:seg rows under `prompt`, by row (from their key.json)."""
    from controlnet.assets import mini_controlnet_dir

    paths = {str(Path(p).resolve()): arm for arm, p in runs.items()}
    paths[str(mini_controlnet_dir("seg").resolve())] = "shipped"
    found = {}
    for key in sorted(cache.glob("*/key.json")) if cache.is_dir() else []:
        d = json.loads(key.read_text())
        if d.get("prompt") != prompt or d.get("data") != "world:seg" or "sampling" not in d:
            continue
        cn = d.get("controlnet")
        row = "no control" if cn is None else paths.get(str(cn.get("path")) if isinstance(cn, dict) else "")
        if row:
            found[row] = key.parent
    return found


if __name__ == "__main__":
    sys.exit(main())
