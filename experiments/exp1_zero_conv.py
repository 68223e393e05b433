"""Experiment 1 (paper §3.1, §3.3, Fig 4): zero convolutions keep the base model intact, and
training converges suddenly.

(a) Safety: a fresh ControlNet (zero convolutions) copied from the built-in model's U-Net changes no
    output: pictures with it equal the base model's bit for bit (asserted), while the §4.2 ablation's
    Gaussian-initialised connections do change them.
(b) Sudden convergence: the edges ControlNet trained from scratch with `controlnet train` on world
    pairs (the built-in recipe's settings: batch 32, lr 1e-3, 50% empty prompts), its fidelity
    measured by the trainer's validation monitor every 50 steps on 16 held-out conditions (edge F1
    of canny on the samples, with the caption and with no prompt); the jump located from the curve,
    and one fixed condition's sample over training as a strip.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp1_zero_conv.py        # ~40 min
    .venv/bin/python experiments/exp1_zero_conv.py --tiny -o /tmp/exp1                 # seconds
    .venv/bin/python experiments/exp1_zero_conv.py --no-train   # (a) and the curve so far
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "exp1_zero_conv"
SIZE = 64


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1500, help="training steps")
    p.add_argument("--every", type=int, default=50, help="validation every N steps")
    p.add_argument("--no-train", action="store_true", help="only (a) and the analysis of the run so far")
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    tiny = args.tiny
    plan = {"steps": 4 if tiny else args.steps, "every": 2 if tiny else args.every, "samples": 16 if tiny else 8000,
            "validation": 2 if tiny else 16, "batch": 2 if tiny else 32, "lr": 1e-3,
            "sample_steps": 2 if tiny else 20}
    results = common.Results(out / f"{NAME}.json", {**plan, "weights": common.weights_id(())})  # trains its own
    if not results.done("safety"):
        results.put("safety", safety(n=2 if tiny else 8, steps=plan["sample_steps"]))
    if not args.no_train:
        train(work, plan)
    curve = read_curve(work / "run" / "validation")
    if curve:
        results.put("curve", {"points": curve, "jump": {k: jump(curve, k) for k in ("f1_empty", "f1_prompt")}})
        figure(curve, work / "run" / "validation", out)
    return 0


def safety(n: int, steps: int) -> dict:
    """Pictures with a fresh zero-initialised ControlNet vs without any: identical? (and Gaussian)."""
    import torch

    from controlnet import ControlNet
    from controlnet.assets import resolve_model
    from controlnet.pipeline import ControlPipeline, ControlUnit

    pipe = ControlPipeline.from_pretrained(resolve_model("mini"))
    items = common.world_items(n)
    prompts = [it.caption for it in items]
    conds = [it.conditions["edges"] for it in items]

    def run(units):
        return pipe(prompts, units=units, steps=steps, guidance_scale=5.0, seed=0, width=SIZE, height=SIZE,
                    output_type="np", progress=False).images

    base = run([])
    out = {"n": n, "steps": steps, "cfg": 5.0}
    for init in ("zero", "gaussian"):
        torch.manual_seed(0)
        cn = ControlNet.from_unet(pipe.unet, connection_init=init)
        diff = np.abs(run([ControlUnit(cn, conds)]) - base)
        out[init] = {"identical": bool((diff == 0).all()), "max_abs_diff": float(diff.max()),
                     "mean_abs_diff_255": float(diff.mean() * 255)}
    if not out["zero"]["identical"]:
        raise AssertionError(f"zero convolutions changed the output (max |diff| {out['zero']['max_abs_diff']})")
    return out


def train(work: Path, plan: dict) -> None:
    """World pairs exported and the ControlNet trained with the public commands (both resume)."""
    data, val, run = work / "data", work / "validation", work / "run"
    if (run / "diffusion_pytorch_model.safetensors").is_file():
        return
    for folder, n, seed in ((data, plan["samples"], 0), (val, plan["validation"], 1)):
        if not common.export_complete(folder):
            common.run_cli(["world", "export", str(folder), "--n", str(n), "--layout", "imagefolder",
                            "--condition", "edges", "--seed", str(seed), "--size", str(SIZE)])
    import json

    rows = [json.loads(x) for x in (val / "metadata.jsonl").read_text().splitlines() if x.strip()]
    from controlnet.assets import mini_model_dir

    args = ["train", "--base-model", str(mini_model_dir()), "--data", str(data), "--output-dir", str(run),
            "--resolution", str(SIZE), "--batch-size", str(plan["batch"]), "--learning-rate", str(plan["lr"]),
            "--empty-prompt-prob", "0.5", "--max-steps", str(plan["steps"]), "--cache-dir", str(work / "cache"),
            "--checkpoint-every", str(max(plan["every"], plan["steps"] // 6)), "--keep-checkpoints", "1",
            "--report-to", "none", "--no-progress", "--seed", "0", "--log-every", str(plan["every"]),
            "--validate-every", str(plan["every"]), "--validation-annotator", "canny",
            "--num-validation-samples", "1", "--validation-steps", str(plan["sample_steps"]),
            "--guidance-scale", "5", "--validation-images", *[str(val / r["conditioning_image"]) for r in rows],
            "--validation-prompts", *[r["text"] for r in rows]]
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        args += ["--resume", "latest"]
    common.run_cli(args)


def read_curve(folder: Path) -> list[dict]:
    """Edge F1 (2 px and exact) of every validation grid (rows: condition | with caption | no prompt),
    recomputed with the evaluation's own function from the pictures the trainer saved."""
    from controlnet.evaluation import control_fidelity_scores
    from controlnet.images import to_rgb8

    points = []
    for png in sorted(folder.glob("step-*.png")) if folder.is_dir() else []:
        grid = to_rgb8(png)
        rows = [grid[r:r + SIZE] for r in range(0, grid.shape[0], SIZE)]
        scores = {"f1_prompt": [], "f1_empty": [], "f1_exact_prompt": [], "f1_exact_empty": []}
        for row in rows:
            cond, with_prompt, empty = (row[:, k * SIZE:(k + 1) * SIZE] for k in range(3))
            for name, img in (("prompt", with_prompt), ("empty", empty)):
                s = control_fidelity_scores("canny", img, cond)
                scores[f"f1_{name}"].append(s["edge_f1"])
                scores[f"f1_exact_{name}"].append(s["edge_f1_exact"])
        point = {"step": int(png.stem.split("-")[1])}
        point.update({k: common.estimate(v) for k, v in scores.items()})
        points.append(point)
    return points


def jump(curve: list[dict], key: str) -> dict:
    """Where fidelity rises most between two validations, and how sharp the rise is: the steps from
    10% to 90% of the way between the start (first value) and the end plateau (mean of the last 3)."""
    steps = np.array([p["step"] for p in curve])
    y = np.array([p[key]["value"] for p in curve])
    if len(y) < 2:
        return {"steps_10_90": None, "largest_rise_at": None}
    rise = np.diff(y)
    k = int(rise.argmax())
    start, end = float(y[0]), float(y[-3:].mean())
    out = {"start": start, "end_plateau": end, "largest_rise_at": int(steps[k + 1]),
           "largest_rise": float(rise[k]), "largest_rise_from": int(steps[k])}
    if end > start:
        reach = [int(steps[np.argmax(y >= start + f * (end - start))]) for f in (0.1, 0.5, 0.9)]
        out.update({"step_10": reach[0], "step_50": reach[1], "step_90": reach[2], "steps_10_90": reach[2] - reach[0]})
    return out


def figure(curve: list[dict], folder: Path, out: Path) -> None:
    """Fidelity against training step (with intervals over the 16 conditions) and a strip of the first
    validation condition's no-prompt sample at each validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controlnet.files import save_figure, save_image
    from controlnet.images import to_rgb8
    from controlnet.world.grid import image_grid

    fig, ax = plt.subplots(figsize=(7, 3.6))
    x = [p["step"] for p in curve]
    for key, label in (("f1_empty", "no prompt"), ("f1_prompt", "caption, CFG 5"),
                       ("f1_exact_empty", "no prompt, exact px")):
        y = np.array([p[key]["value"] for p in curve])
        lo, hi = np.array([p[key]["ci_low"] for p in curve]), np.array([p[key]["ci_high"] for p in curve])
        ax.plot(x, y, marker=".", label=label)
        ax.fill_between(x, lo, hi, alpha=0.2)
    ax.set_xlabel("training step")
    ax.set_ylabel("edge F1 of canny(sample) vs condition")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out / f"{NAME}.png")
    pngs = sorted(folder.glob("step-*.png"))
    first = to_rgb8(pngs[0])[:SIZE, :SIZE]
    strip = [first] + [to_rgb8(p)[:SIZE, 2 * SIZE:3 * SIZE] for p in pngs[:: max(1, len(pngs) // 12)]]
    save_image(image_grid([strip], scale=2), out / f"{NAME}_strip.png")


if __name__ == "__main__":
    sys.exit(main())
