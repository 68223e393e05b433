"""Experiment 2 (paper §4.2, Fig 8, Table 1): the architecture ablation — ControlNet (zero
convolutions) vs the same network with Gaussian-initialised connections vs ControlNet-lite.

All three arms are the edges ControlNet trained from scratch on the built-in base with the exact
`controlnet train` arguments of Experiment 1's run (same world pairs, latent cache, seed, steps,
validation conditions), changing only `--connection-init gaussian` resp. `--copy lite`; the
zero-convolution arm IS Experiment 1's run. Then `controlnet evaluate` scores the three under the
paper's four prompt settings at explicit settings (CFG 5, weight 1 — Experiment 1's validation).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp2_ablation.py       # trains, evaluates
    .venv/bin/python experiments/exp2_ablation.py --arm lite      # train one arm only (run in parallel)
    .venv/bin/python experiments/exp2_ablation.py --tiny -o /tmp/exp2                # seconds
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import exp1_zero_conv as exp1  # noqa: E402

NAME = "exp2_ablation"
EXP1 = common.WORK / "exp1_zero_conv"
ARMS = {"gaussian": ["--connection-init", "gaussian"], "lite": ["--copy", "lite"]}  # zero: Exp 1's run


def train_args(exp1_run: Path, out: Path, extra: list[str], steps: int | None = None) -> list[str]:
    """`controlnet train` arguments rebuilt from Exp 1's saved train_config.json (so the arms differ
    from it only by `extra`); resumes when `out` has checkpoints."""
    cfg = json.loads((exp1_run / "train_config.json").read_text())
    args = ["train", "--base-model", cfg["base_model"], "--data", *cfg["data"], "--output-dir", str(out),
            "--resolution", str(cfg["resolution"]), "--batch-size", str(cfg["batch_size"]),
            "--learning-rate", str(cfg["learning_rate"]), "--empty-prompt-prob", str(cfg["empty_prompt_prob"]),
            "--max-steps", str(steps or cfg["max_steps"]), "--checkpoint-every", str(cfg["checkpoint_every"]),
            "--keep-checkpoints", str(cfg["keep_checkpoints"]), "--report-to", "none", "--no-progress",
            "--seed", str(cfg["seed"]), "--log-every", str(cfg["log_every"]),
            "--validate-every", str(cfg["validate_every"]), "--validation-annotator", cfg["validation_annotator"],
            "--num-validation-samples", str(cfg["num_validation_samples"]),
            "--validation-steps", str(cfg["validation_steps"]), "--guidance-scale", str(cfg["guidance_scale"]),
            "--validation-images", *cfg["validation_images"], "--validation-prompts", *cfg["validation_prompts"]]
    if cfg.get("cache_dir"):
        args += ["--cache-dir", cfg["cache_dir"]]
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        args += ["--resume", "latest"]
    return args + extra


def train_arm(exp1_run: Path, work: Path, arm: str, steps: int | None = None) -> Path:
    """Train one ablation arm (skipped when its final weights exist)."""
    run = work / f"run-{arm}"
    if not (run / "diffusion_pytorch_model.safetensors").is_file():
        common.run_cli(train_args(exp1_run, run, ARMS[arm], steps))
    return run


def eval_args(runs: dict[str, Path], out: Path, plan: dict) -> list[str]:
    """The `controlnet evaluate` command: every arm a row (label `edges=PATH`), the no-control row,
    the four prompt settings, explicit sampling settings."""
    args = ["evaluate", "--model", "mini", "--data", "world:edges", "--prompts", "all", "--n", str(plan["n"]),
            "--steps", str(plan["sample_steps"]), "--cfg", str(plan["cfg"]), "--weight", str(plan["weight"]),
            "--mode", "balanced", "--scheduler", "ddim", "--seed", "0", "-o", str(out)]
    for run in runs.values():
        args += ["--controlnet", f"edges={run}"]
    return args + ([] if plan["fid"] else ["--no-fid"])


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    common.add_arm_options(p, sorted(ARMS), "train this arm")
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    if args.arm:
        train_arm(EXP1 / "run", work, args.arm)
        return 0
    tiny = args.tiny
    plan = {"n": args.n or (2 if tiny else 48), "sample_steps": 2 if tiny else 20, "cfg": 5.0, "weight": 1.0,
            "mode": "balanced", "fid": not tiny}
    exp1_run = tiny_exp1(work) if tiny else EXP1 / "run"
    runs = {"zero": exp1_run, **{arm: work / f"run-{arm}" for arm in ARMS}}
    if not args.partial:
        for arm in ARMS:
            train_arm(exp1_run, work, arm, 2 if tiny else None)
    weights = {arm: trained_weights(run) for arm, run in runs.items()}
    results = common.Results(out / f"{NAME}.json", {**plan, "weights": common.weights_id(()),
                                                    "arms": {k: _arm_id(*v) for k, v in weights.items()}})
    runs_w = {arm: w for arm, (w, _) in weights.items()}
    if not results.done("curves"):
        results.put("curves", {arm: exp1.read_curve(run / "validation") for arm, run in runs.items()})
    if not results.done("eval"):
        results.put("eval", evaluate(runs_w, work / "eval", plan))
    if not results.done("command"):
        results.put("command", "controlnet " + " ".join(eval_args(runs_w, work / "eval", plan)))
    figure(results, runs, work / "eval", out)
    print(markdown(results.data["parts"]))
    return 0


def markdown(parts: dict) -> str:
    """The docs' tables: each metric by arm and prompt setting; validation F1 by step and arm."""
    recs, lines = parts["eval"]["records"], []
    for metric in ("edge_f1", "edge_f1_exact", "prompt_adherence", "fid", "kid"):
        got = {(r["row"], r["prompt"]): r for r in recs if r["metric"] == metric}
        if got:
            lines += ["", f"| {metric} | " + " | ".join(PROMPTS) + " |", "|---" * (len(PROMPTS) + 1) + "|"]
            lines += [f"| {LABELS[row]} | " + " | ".join(_cell(got.get((row, p))) for p in PROMPTS) + " |"
                      for row in ROWS]
    curves = parts["curves"]
    for key in ("f1_empty", "f1_prompt"):
        lines += ["", f"| step ({key}) | " + " | ".join(LABELS[a] for a in curves) + " |",
                  "|---" * (len(curves) + 1) + "|"]
        by_step = {a: {p["step"]: p[key] for p in c} for a, c in curves.items()}
        for step in sorted(set.intersection(*(set(v) for v in by_step.values()))):
            lines.append(f"| {step} | " + " | ".join(_cell(v[step]) for v in by_step.values()) + " |")
    return "\n".join(lines)


def _cell(r) -> str:
    if r is None:
        return ""
    if r.get("ci_low") is None:
        return f"{r['value']:.3g}"
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def tiny_exp1(work: Path) -> Path:
    """Smoke mode: Experiment 1's own tiny training (4 steps, 16 pairs) stands in for its real run."""
    exp1.train(work / "exp1", {"steps": 2, "every": 2, "samples": 8, "validation": 2, "batch": 2, "lr": 1e-3,
                               "sample_steps": 2})
    return work / "exp1" / "run"


def trained_weights(run: Path) -> tuple[Path, int]:
    """(weights folder, training step) of an arm: its final weights, else its latest checkpoint."""
    from controlnet.errors import InputError

    if (run / "diffusion_pytorch_model.safetensors").is_file():
        return run, json.loads((run / "train_config.json").read_text())["max_steps"]
    found = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    if not found:
        raise InputError(f"{run} has neither final weights nor a checkpoint: train it (run without --partial)")
    step = json.loads((found[-1] / "state.json").read_text())["step"]
    return _frozen(found[-1] / "controlnet", run / f"at-step-{step:06d}"), step


def _frozen(src: Path, dest: Path) -> Path:
    """A copy of a checkpoint's weights that outlives the checkpoint (the trainer keeps only the
    latest) at a fixed path (evaluate's picture cache is keyed by the weights' path and mtime)."""
    import os
    import shutil

    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        os.replace(tmp, dest)
    return dest


def _arm_id(weights: Path, step: int) -> dict:
    """Which weights an arm is: its folder, training step and the hash of its weights file."""
    return {"path": str(weights), "step": step,
            "sha256_16": common.file_hash(weights / "diffusion_pytorch_model.safetensors")}


def evaluate(runs: dict[str, Path], folder: Path, plan: dict) -> dict:
    """Run `controlnet evaluate` and keep its records, rows renamed to the arms."""
    common.run_cli(eval_args(runs, folder, plan))
    metrics = json.loads((folder / "metrics.json").read_text())
    names = {f"edges={run}": arm for arm, run in runs.items()} | {"no control": "no control"}
    records = [{**r, "row": names[r["row"]]} for r in metrics["records"]]
    return {"settings": metrics["settings"], "records": records, "not_computed": metrics["not_computed"]}


ROWS = ("no control", "zero", "gaussian", "lite")
LABELS = {"no control": "no control", "zero": "ControlNet (zero conv)", "gaussian": "Gaussian-init conv",
          "lite": "ControlNet-lite"}
PROMPTS = ("none", "insufficient", "conflicting", "perfect")


def figure(results, runs: dict[str, Path], eval_folder: Path, out: Path) -> None:
    """Bars per prompt setting and arm (edge F1, prompt adherence, KID with intervals; FID), the
    arms' validation curves in one plot, and evaluate's sample grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controlnet.files import save_figure, save_image
    from controlnet.images import to_rgb8

    recs = results.get("eval")["records"]
    metrics = [m for m in ("edge_f1", "prompt_adherence", "fid", "kid") if any(r["metric"] == m for r in recs)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.6), squeeze=False)
    width = 0.8 / len(ROWS)
    for ax, metric in zip(axes[0], metrics):
        for k, row in enumerate(ROWS):
            got = {r["prompt"]: r for r in recs if r["metric"] == metric and r["row"] == row}
            ps = [p for p in PROMPTS if p in got]
            xs = [PROMPTS.index(p) + (k - (len(ROWS) - 1) / 2) * width for p in ps]
            vals = [got[p]["value"] for p in ps]
            err = [[v - _or(got[p]["ci_low"], v) for v, p in zip(vals, ps)],
                   [_or(got[p]["ci_high"], v) - v for v, p in zip(vals, ps)]]
            ax.bar(xs, vals, width, yerr=err, capsize=2, label=LABELS[row])
        ax.set_xticks(range(len(PROMPTS)), PROMPTS, fontsize=8)
        ax.set_title(metric + (" (no interval)" if metric == "fid" else ""), fontsize=9)
    axes[0][0].legend(fontsize=7)
    head = results.data["header"]
    fig.suptitle("training steps: " + ", ".join(f"{LABELS[a]} {v['step']}" for a, v in head["arms"].items())
                 + f"; CFG {head['cfg']:g}, weight {head['weight']:g}, n={head['n']}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / f"{NAME}.png")
    curves(results.get("curves"), out)
    if (eval_folder / "samples.png").is_file():
        save_image(to_rgb8(eval_folder / "samples.png"), out / f"{NAME}_samples.png")


def _or(x, default):
    return default if x is None else x


def curves(points: dict[str, list[dict]], out: Path) -> None:
    """Validation edge F1 against training step (Exp 1's monitor grids), the three arms in one plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from controlnet.files import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, key, title in zip(axes, ("f1_empty", "f1_prompt"), ("no prompt", "caption, CFG 5")):
        for arm, curve in points.items():
            if not curve:
                continue
            x = [p["step"] for p in curve]
            ax.plot(x, [p[key]["value"] for p in curve], marker=".", label=LABELS[arm])
            ax.fill_between(x, np.array([p[key]["ci_low"] for p in curve]),
                            np.array([p[key]["ci_high"] for p in curve]), alpha=0.15)
        ax.set_title(f"validation edge F1, {title}", fontsize=9)
        ax.set_xlabel("training step")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / f"{NAME}_curves.png")


if __name__ == "__main__":
    sys.exit(main())
