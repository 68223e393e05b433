"""Experiment 3 (paper Fig 10): training-data size — the edges ControlNet trained on the first 1k,
10k and 50k world pairs, the same 1,000 steps each.

One `controlnet world export` of 50,000 pairs (Experiment 1's export settings: edges, world seed 0
from index 0, so its first 8,000 pairs are Experiment 1's, checked); every arm runs the exact
`controlnet train` arguments of Experiment 1's run (batch 32, lr 1e-3, 50% empty prompts, seed 0,
1,000 steps, the same 16 validation conditions) on that export with `--max-train-samples N`, one
shared latent cache (content-keyed: each picture is encoded once for all arms; Experiment 1's cache
is linked in) and validation every 100 steps instead of 50 (validation draws from its own seeded
generators, so it leaves the training's random stream alone). Experiment 1's run is the 8,000-pair
point. Then `controlnet evaluate` scores every size at explicit settings (CFG 5, weight 1).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp3_data_size.py --arm 1k   # one arm; resumes
    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp3_data_size.py            # all, evaluate
    .venv/bin/python experiments/exp3_data_size.py --tiny -o /tmp/exp3                     # seconds
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import exp1_zero_conv as exp1  # noqa: E402
import exp2_ablation as exp2  # noqa: E402

NAME = "exp3_data_size"
EXP1 = common.WORK / "exp1_zero_conv"
SIZES = {"1k": 1000, "50k": 50000, "10k": 10000}  # training order: the priority when CPU is short
TINY_SIZES = {"1k": 2, "50k": 12, "10k": 4}
VALIDATE_EVERY = 100
PROMPTS = ("none", "perfect")


def plan_for(tiny: bool, n: int | None, fid: bool) -> dict:
    return {"sizes": TINY_SIZES if tiny else SIZES, "export_n": 12 if tiny else 50000,
            "validate_every": 2 if tiny else VALIDATE_EVERY, "steps": 2 if tiny else None,
            "n": n or (2 if tiny else 48), "sample_steps": 2 if tiny else 20, "cfg": 5.0, "weight": 1.0,
            "mode": "balanced", "prompts": list(PROMPTS), "fid": fid and not tiny}


def export(work: Path, exp1_run: Path, n: int) -> Path:
    """World pairs exported with Experiment 1's settings but `n` of them (resumes; timed)."""
    src = Path(json.loads((exp1_run / "train_config.json").read_text())["data"][0])
    ws = json.loads((src / "world.json").read_text())
    data = work / "data"
    if not common.export_complete(data):
        with timed(work, "export"):
            common.run_cli(["world", "export", str(data), "--n", str(n), "--layout", ws["layout"],
                            "--condition", ws["condition"], "--seed", str(ws["seed"]), "--size", str(ws["size"]),
                            "--start", str(ws["start"]), "--min-shapes", str(ws["min_shapes"]),
                            "--max-shapes", str(ws["max_shapes"])])
    return data


def prefix_check(data: Path, exp1_data: Path) -> dict:
    """Whether the export's first pairs are Experiment 1's, byte for byte (pictures, maps, captions)."""
    import hashlib

    ours = (data / "metadata.jsonl").read_text().splitlines()
    theirs = (exp1_data / "metadata.jsonl").read_text().splitlines()
    same = ours[:len(theirs)] == theirs
    for line in theirs if same else ():
        row = json.loads(line)
        for col in ("image", "conditioning_image"):
            a, b = (hashlib.sha256((d / row[col]).read_bytes()).digest() for d in (data, exp1_data))
            same = same and a == b
    return {"pairs_compared": len(theirs), "identical": same}


def link_cache(src: Path, dest: Path) -> None:
    """Experiment 1's latent and text cache hard-linked into ours (content-keyed files, written by
    atomic rename, never in place: linking is safe and costs no disk)."""
    if not src.is_dir():
        return
    for f in src.rglob("*.safetensors"):
        target = dest / f.relative_to(src)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(f, target)


def link_eval_cache(src: Path, dest: Path, rows: dict[str, Path], prompts: list[str]) -> None:
    """Experiment 2's cached evaluation pictures of our rows (no control, Experiment 1's run) linked
    into ours: a folder is named by the hash of everything its pictures depend on (weights' path,
    size and mtime, sampling settings, prompt setting), so `controlnet evaluate` reuses one only
    when that is identical."""
    paths = {None, *(str(p.resolve()) for p in rows.values())}
    for key in src.glob("*/key.json") if src.is_dir() else []:
        desc = json.loads(key.read_text())
        if (desc.get("controlnet") or {}).get("path") not in paths or desc.get("prompt") not in prompts:
            continue
        for f in key.parent.iterdir():
            target = dest / key.parent.name / f.name
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, target)


def train_args(exp1_run: Path, data: Path, cache: Path, out: Path, max_samples: int, validate_every: int,
               steps: int | None = None) -> list[str]:
    """Experiment 1's `controlnet train` arguments (rebuilt as Experiment 2 does) on our export and
    cache, validating every `validate_every` steps, on its first `max_samples` pairs."""
    args = exp2.train_args(exp1_run, out, ["--max-train-samples", str(max_samples)], steps)
    for flag, value in (("--data", data), ("--cache-dir", cache), ("--validate-every", validate_every)):
        i = args.index(flag)
        if flag == "--data" and not args[i + 2].startswith("--"):
            raise ValueError("Experiment 1 trained on several data folders; this script expects one")
        args[i + 1] = str(value)
    return args


def train_arm(exp1_run: Path, work: Path, arm: str, plan: dict) -> Path:
    """Train one data-size arm (skipped when its final weights exist; resumes from its checkpoint)."""
    run = work / f"run-{arm}"
    if not (run / "diffusion_pytorch_model.safetensors").is_file():
        link_cache(Path(json.loads((exp1_run / "train_config.json").read_text()).get("cache_dir") or "/nonexistent"),
                   work / "cache")
        args = train_args(exp1_run, work / "data", work / "cache", run, plan["sizes"][arm], plan["validate_every"],
                          plan["steps"])
        with timed(work, f"train-{arm}"):
            common.run_cli(args)
    return run


class timed:
    """Wall and CPU seconds of one piece of work, appended to work/timings.jsonl (a resumed piece
    adds a line per session)."""

    def __init__(self, work: Path, what: str):
        self.path, self.what = work / "timings.jsonl", what

    def __enter__(self):
        self.t, self.c = time.time(), time.process_time()

    def __exit__(self, *exc):
        line = {"what": self.what, "wall_s": round(time.time() - self.t, 1),
                "cpu_s": round(time.process_time() - self.c, 1), "finished": exc[0] is None}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:  # a log, appended; not a result file
            f.write(json.dumps(line) + "\n")


def timings(work: Path) -> dict:
    """Summed wall and CPU seconds per piece of work."""
    out: dict[str, dict] = {}
    path = work / "timings.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        r = json.loads(line)
        t = out.setdefault(r["what"], {"wall_s": 0.0, "cpu_s": 0.0, "sessions": 0})
        t["wall_s"] += r["wall_s"]
        t["cpu_s"] += r["cpu_s"]
        t["sessions"] += 1
    return out


def rows(exp1_run: Path, work: Path) -> dict[str, Path]:
    """Every data size's run folder, Experiment 1's run among them, in order of size."""
    runs = {arm: work / f"run-{arm}" for arm in SIZES}
    runs["exp1"] = exp1_run
    return dict(sorted(runs.items(), key=lambda kv: n_pairs(kv[1])))  # evaluate's grid columns by size


def n_pairs(run: Path) -> int:
    """Training pairs a run used: its --max-train-samples, else its whole export."""
    cfg = json.loads((run / "train_config.json").read_text())
    n = json.loads((Path(cfg["data"][0]) / "world.json").read_text())["n"]
    return min(n, cfg["max_train_samples"] or n)


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    common.add_arm_options(p, list(SIZES), "train this data size")
    p.add_argument("--fid", action="store_true", help="also FID/KID in the evaluation (Inception features)")
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    plan = plan_for(args.tiny, args.n, args.fid)
    exp1_run = exp2.tiny_exp1(work) if args.tiny else EXP1 / "run"
    export(work, exp1_run, plan["export_n"])
    arms = [args.arm] if args.arm else list(plan["sizes"])
    if not args.partial:
        for arm in arms:
            train_arm(exp1_run, work, arm, plan)
    if args.arm:
        return 0
    runs = rows(exp1_run, work)
    weights = {arm: exp2.trained_weights(run) for arm, run in runs.items()}
    header = {**plan, "weights": common.weights_id(()),
              "arms": {k: {**exp2._arm_id(*v), "pairs": n_pairs(runs[k])} for k, v in weights.items()}}
    results = common.Results(out / f"{NAME}.json", header)
    if not results.done("export_prefix"):
        exp1_data = Path(json.loads((exp1_run / "train_config.json").read_text())["data"][0])
        results.put("export_prefix", prefix_check(work / "data", exp1_data))
    if not results.done("curves"):
        results.put("curves", {arm: exp1.read_curve(run / "validation") for arm, run in runs.items()})
    if not results.done("train_loss"):
        results.put("train_loss", {arm: last_loss(run) for arm, run in runs.items()})
    if not results.done("eval"):
        if not args.tiny:  # tiny rows are other weights: nothing to reuse
            link_eval_cache(common.WORK / "exp2_ablation" / "eval" / "cache", work / "eval" / "cache",
                            {"exp1": exp1_run}, plan["prompts"])
        with timed(work, "evaluate"):
            results.put("eval", evaluate({a: w for a, (w, _) in weights.items()}, work / "eval", plan))
    results.put("timings", timings(work))
    figure(results, work / "eval", out)
    print(markdown(results.data))
    return 0


def last_loss(run: Path, last: int = 100) -> dict:
    """Mean training loss over the last `last` logged steps (a memorising arm's falls below the others')."""
    import numpy as np

    log = run / "train_log.jsonl"
    losses = [json.loads(x)["loss"] for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []
    tail = [v for v in losses[-last:] if v is not None]
    return {"mean": float(np.mean(tail)) if tail else None, "steps": len(tail), "last_step": len(losses),
            **({} if tail else {"note": "no training log"})}


def eval_args(runs: dict[str, Path], out: Path, plan: dict) -> list[str]:
    """Experiment 2's `controlnet evaluate` command, with our prompt settings."""
    args = exp2.eval_args(runs, out, plan)
    args[args.index("--prompts") + 1] = ",".join(plan["prompts"])
    return args


def evaluate(runs: dict[str, Path], folder: Path, plan: dict) -> dict:
    """`controlnet evaluate` with a row per data size; its records, rows renamed to the arms."""
    args = eval_args(runs, folder, plan)
    common.run_cli(args)
    metrics = json.loads((folder / "metrics.json").read_text())
    names = {f"edges={run}": arm for arm, run in runs.items()} | {"no control": "no control"}
    return {"settings": metrics["settings"], "records": [{**r, "row": names[r["row"]]} for r in metrics["records"]],
            "not_computed": metrics["not_computed"], "command": "controlnet " + " ".join(args)}


def label(arm: str, arms: dict) -> str:
    return f"{arms[arm]['pairs']:,} pairs" + (" (Exp 1's run)" if arm == "exp1" else "")


def markdown(data: dict) -> str:
    """The docs' tables: metric by data size and prompt setting; validation F1 by step."""
    parts, arms = data["parts"], data["header"]["arms"]
    order = sorted(arms, key=lambda a: arms[a]["pairs"])
    recs, lines = parts["eval"]["records"], []
    for metric in ("edge_f1", "edge_f1_exact", "label_accuracy", "fid", "kid"):
        got = {(r["row"], r["prompt"]): r for r in recs if r["metric"] == metric}
        if got:
            lines += ["", f"| {metric} | pairs | step | " + " | ".join(PROMPTS) + " |", "|---" * (len(PROMPTS) + 3) + "|"]
            lines.append("| no control | | | " + " | ".join(exp2._cell(got.get(("no control", p))) for p in PROMPTS) + " |")
            lines += [f"| {label(a, arms)} | {arms[a]['pairs']:,} | {arms[a]['step']} | "
                      + " | ".join(exp2._cell(got.get((a, p))) for p in PROMPTS) + " |" for a in order]
    loss = parts.get("train_loss", {})
    lines += ["", "| training loss (last 100 steps) | " + " | ".join(label(a, arms) for a in order) + " |",
              "|---" * (len(order) + 1) + "|", "| mean | " + " | ".join(f"{loss[a]['mean']:.4f}" if loss.get(a, {}).get("mean") else "" for a in order)
              + " |"]
    for key in ("f1_empty", "f1_prompt"):
        by_step = {a: {p["step"]: p[key] for p in parts["curves"][a]} for a in order}
        steps = sorted(set.intersection(*(set(v) for v in by_step.values() if v)) or set())
        lines += ["", f"| step ({key}) | " + " | ".join(label(a, arms) for a in order) + " |", "|---" * (len(order) + 1) + "|"]
        lines += [f"| {s} | " + " | ".join(exp2._cell(by_step[a].get(s)) for a in order) + " |" for s in steps]
    t = parts.get("timings", {})
    lines += ["", "| work | wall min | CPU min (this process) |", "|---|---|---|"]
    lines += [f"| {k} | {v['wall_s'] / 60:.1f} | {v['cpu_s'] / 60:.1f} |" for k, v in t.items()]
    return "\n".join(lines)


def figure(results, eval_folder: Path, out: Path) -> None:
    """Edge F1 (95% intervals) against training pairs (log x) per prompt setting with the no-control
    level; validation edge F1 against step per data size; evaluate's sample grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from controlnet.files import save_figure, save_image
    from controlnet.images import to_rgb8

    head, parts = results.data["header"], results.data["parts"]
    arms = head["arms"]
    order = sorted(arms, key=lambda a: arms[a]["pairs"])
    recs = parts["eval"]["records"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    for k, prompt in enumerate(PROMPTS):
        got = {r["row"]: r for r in recs if r["metric"] == "edge_f1" and r["prompt"] == prompt}
        xs = [arms[a]["pairs"] * (0.96 + 0.08 * k) for a in order if a in got]  # side by side
        ys = np.array([got[a]["value"] for a in order if a in got])
        err = [ys - [exp2._or(got[a]["ci_low"], got[a]["value"]) for a in order if a in got],
               [exp2._or(got[a]["ci_high"], got[a]["value"]) for a in order if a in got] - ys]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=f"C{k}", label=f"prompt: {prompt}")
        if "no control" in got:
            ax.axhline(got["no control"]["value"], color=f"C{k}", ls=":", lw=1, label=f"no control ({prompt})")
    ax.set_xscale("log")
    ticks = sorted({arms[a]["pairs"] for a in order})
    ax.set_xticks(ticks, [f"{t / 1000:g}k" if t >= 1000 else str(t) for t in ticks], fontsize=7)
    ax.minorticks_off()
    ax.set_xlabel("training pairs (the same steps each)")
    ax.set_ylabel(f"edge F1 (held-out, n={head['n']})")
    ax.legend(fontsize=7)
    ax.set_title(f"CFG {head['cfg']:g}, weight {head['weight']:g}; steps: "
                 + ", ".join(f"{arms[a]['pairs']:,}→{arms[a]['step']}" for a in order), fontsize=7)
    for ax, key, title in zip(axes[1:], ("f1_empty", "f1_prompt"), ("no prompt", "caption, CFG 5")):
        for a in order:
            curve = parts["curves"].get(a) or []
            if curve:
                x = [p["step"] for p in curve]
                ax.plot(x, [p[key]["value"] for p in curve], marker=".", label=label(a, arms))
                ax.fill_between(x, [p[key]["ci_low"] for p in curve], [p[key]["ci_high"] for p in curve], alpha=0.1)
        ax.set_title(f"validation edge F1, {title}", fontsize=8)
        ax.set_xlabel("training step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / f"{NAME}.png")
    if (eval_folder / "samples.png").is_file():
        save_image(to_rgb8(eval_folder / "samples.png"), out / f"{NAME}_samples.png")


if __name__ == "__main__":
    sys.exit(main())
