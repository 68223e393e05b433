"""Experiment 5 (paper §3.4, Fig 6): several ControlNets compose by adding their outputs.

Two built-in ControlNets together (depth + edges, seg + edges, seg + depth), each fed its own
condition map of the SAME held-out world sample, against each alone and against no control (same
prompts and seeds everywhere), sampled with `ControlPipeline` and two `ControlUnit`s. Every picture
is scored for every condition kind with the world's exact ground truth: edges -> edge F1 (2 px),
seg -> label accuracy, depth -> colour-depth RMSE and depth-order error. "Both followed at once"
means: the pair beats no control on both of its measures, and stays close to each single
ControlNet on that ControlNet's own measure.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp5_composition.py     # ~5 min
    .venv/bin/python experiments/exp5_composition.py --tiny -o /tmp/exp5             # seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "exp5_composition"
PAIRS = [("depth", "edges"), ("seg", "edges"), ("seg", "depth")]
HEADLINE = {"edges": "edge_f1", "seg": "label_accuracy", "depth": "depth_rmse"}
GRID = 2  # samples per pair in the figure
COLOURS = ["grey", "tab:blue", "tab:orange", "tab:green", "lightsteelblue", "navajowhite"]


def settings_of(pair, doubled: bool = False) -> dict[str, tuple[tuple[str, ...], float]]:
    """label -> (kinds, weight factor). `doubled` adds each ControlNet alone at twice the weight: does
    the pair add a second condition, or only strength?"""
    a, b = pair
    out = {"none": ((), 1.0), f"{a} alone": ((a,), 1.0), f"{b} alone": ((b,), 1.0), f"{a} + {b}": ((a, b), 1.0)}
    if doubled:
        out.update({f"{a} x2": ((a,), 2.0), f"{b} x2": ((b,), 2.0)})
    return out


def key_of(prompt: str, kinds, factor: float) -> str:
    return f"{prompt}|{'+'.join(kinds) or 'none'}" + (f"x{factor:g}" if factor != 1.0 else "")


def main(argv=None) -> int:
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--prompts", nargs="+", default=["perfect", "none"], choices=["perfect", "none"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--weight", type=float, default=1.0, help="weight of every unit")
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    n = args.n or (2 if args.tiny else 64)
    steps = 2 if args.tiny else args.steps
    pairs = PAIRS[:1] if args.tiny else PAIRS
    header = {"n": n, "steps": steps, "cfg": args.cfg, "weight": args.weight, "mode": "balanced",
              "weights": common.weights_id()}
    results = common.Results(out / f"{NAME}.json", header)
    state = {"pipe": None, "cns": {}, "items": common.world_items(n), "weights": header["weights"]["sha256_16"],
             "out": out}
    for prompt in args.prompts:
        for pair in pairs:
            for kinds, factor in settings_of(pair, prompt == "perfect").values():
                key = key_of(prompt, kinds, factor)
                if not results.done(key):
                    pics = pictures(state, work, kinds, prompt, n, steps, args, factor)
                    results.put(key, score(pics, state["items"]))
                    print(f"{key}: done", flush=True)
    figure(results, state, work, pairs, args, n, steps)
    return 0


def pictures(state, work: Path, kinds, prompt: str, n: int, steps: int, args, factor: float = 1.0):
    """The n pictures of one setting (cached): the units of `kinds`, each on its own map of sample i."""
    from controlnet.assets import resolve_controlnet, resolve_model
    from controlnet.checkpoints import load_controlnet
    from controlnet.evaluation.prompts import world_prompt
    from controlnet.pipeline import ControlPipeline, ControlUnit

    if state["pipe"] is None:
        state["pipe"] = ControlPipeline.from_pretrained(resolve_model("mini"))
    for k in kinds:
        state["cns"].setdefault(k, load_controlnet(resolve_controlnet(f"mini:{k}")))
    items = state["items"][:n]
    prompts = [world_prompt(prompt, it.scene) for it in items]

    def units(idx):
        return [ControlUnit(state["cns"][k], [items[i].conditions[k] for i in idx], weight=args.weight * factor)
                for k in kinds]

    key = {"kinds": list(kinds), "prompt": prompt, "steps": steps, "cfg": args.cfg, "weight": args.weight * factor,
           "weights": state["weights"]}
    return common.sample_cached(state["pipe"], work, key, prompts, units, list(range(n)), steps, args.cfg)


def score(images, items) -> dict:
    """Every condition kind's measures of these pictures, with 95% intervals."""
    from controlnet.metrics.world import world_scores

    out = {}
    for kind, metrics in (("edges", ("edge_f1", "edge_f1_exact")), ("seg", ("label_accuracy", "label_miou")),
                          ("depth", ("depth_rmse", "depth_order_error"))):
        per = [world_scores(kind, img, it) for img, it in zip(images, items)]
        for m in metrics:
            out[m] = common.estimate([d[m][0] for d in per], [d[m][1] for d in per])
    return out


def figure(results, state, work: Path, pairs, args, n: int, steps: int) -> None:
    """Bars (each pair: its two conditions' headline measures under none / each alone / both) and a
    sample grid (condition maps | none | each alone | both)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controlnet.files import save_figure

    prompts = args.prompts
    fig, axes = plt.subplots(len(prompts), 2 * len(pairs), figsize=(3.2 * 2 * len(pairs), 3.2 * len(prompts)),
                             squeeze=False)
    for r, prompt in enumerate(prompts):
        for c, (pair, kind) in enumerate((pr, k) for pr in pairs for k in pr):
            ax, metric = axes[r][c], HEADLINE[kind]
            done = {label: key_of(prompt, *s) for label, s in settings_of(pair, True).items()
                    if results.done(key_of(prompt, *s))}
            labels = list(done)
            recs = [results.get(key)[metric] for key in done.values()]
            vals = [x["value"] for x in recs]
            err = [[v - x["ci_low"] for v, x in zip(vals, recs)], [x["ci_high"] - v for v, x in zip(vals, recs)]]
            ax.bar(range(len(vals)), vals, yerr=err, capsize=3, color=COLOURS[:len(vals)])
            ax.set_xticks(range(len(vals)), labels, rotation=30, fontsize=7, ha="right")
            ax.set_title(f"{'+'.join(pair)}: {metric}\n(prompt {prompt})", fontsize=8)
    fig.tight_layout()
    save_figure(fig, state["out"] / f"{NAME}.png")
    sample_grid(state, work, pairs, args, steps)


def sample_grid(state, work: Path, pairs, args, steps: int) -> None:
    from controlnet.files import save_image
    from controlnet.world.grid import image_grid

    prompt = args.prompts[0]
    rows = []
    n = len(state["items"])
    for pair in pairs:
        per_setting = [pictures(state, work, kinds, prompt, n, steps, args, f) for kinds, f in settings_of(pair).values()]
        for i in range(min(GRID, n)):
            it = state["items"][i]
            rows.append([common.rgb(it.conditions[pair[0]]), common.rgb(it.conditions[pair[1]]), it.image,
                         *[pics[i] for pics in per_setting]])
    save_image(image_grid(rows, scale=2), state["out"] / f"{NAME}_samples.png")


if __name__ == "__main__":
    sys.exit(main())
