"""Experiment 4 (paper §3.4, Fig 5): CFG Resolution Weighting, without a prompt.

The built-in edges and seg ControlNets under every control mode of the pipeline (balanced: control
on both CFG branches; prompt: both branches, A1111's soft 0.825 decay; control: cond branch only,
0.825 decay, the released "guess mode"; cfg_rw: cond branch only, the paper's resolution weights)
at several CFG scales, with the empty prompt, through `controlnet evaluate` (same held-out samples
and seeds in every setting). Fidelity: edge F1 within 2 px and exact (edges row), label accuracy
(seg row), and the seg row's layout: edge F1 of its pictures against the scene's outlines (with no
prompt the seg map cannot tell colours, so label accuracy is near zero by construction). Quality:
FID/KID against the true pictures (when the Inception wheel is installed).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python experiments/exp4_cfg_rw.py          # ~15 min
    .venv/bin/python experiments/exp4_cfg_rw.py --tiny -o /tmp/exp4                   # seconds
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

NAME = "exp4_cfg_rw"
ROWS = {"edges": "mini:edges", "seg": "mini:seg"}
KEEP = {("edges", "mini:edges"): ("edge_f1", "edge_f1_exact", "fid", "kid"),
        ("edges", "no control"): ("edge_f1", "edge_f1_exact", "fid", "kid"),
        ("seg", "mini:seg"): ("label_accuracy", "label_miou", "fid", "kid")}
GRID = 4  # samples kept per setting for the figure
UNIFORM = "cond_uniform"  # the paper's plain cond-only arm: control on the cond branch, every scale 1


def main(argv=None) -> int:
    from controlnet.pipeline import MODES

    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 5.0, 9.0])
    p.add_argument("--modes", nargs="+", default=[*MODES, UNIFORM])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--both-branch-cfg", type=float, nargs="+", default=[1.0, 3.0],
                   help="CFG scales at which the modes acting on both branches (balanced, prompt) run: with no "
                        "prompt both branches are equal, so CFG cannot change them (checked at these scales)")
    args = p.parse_args(argv)
    out, work = common.paths(args, NAME)
    n = args.n or (2 if args.tiny else 64)
    steps = 2 if args.tiny else args.steps
    cfgs = [5.0] if args.tiny else args.cfg
    modes = ["balanced", "cfg_rw", UNIFORM] if args.tiny else args.modes
    both_cfg = cfgs if args.tiny else args.both_branch_cfg
    header = {"n": n, "steps": steps, "prompt": "none", "weights": common.weights_id(("edges", "seg")),
              "fid": not args.tiny}
    results = common.Results(out / f"{NAME}.json", header)
    for mode, cfg in plan(cfgs, modes, both_cfg):
        key = f"{mode}@cfg{cfg:g}"
        if not results.done(key):
            run = run_uniform if mode == UNIFORM else run_setting
            results.put(key, run(work, n, steps, cfg, mode, fid=not args.tiny))
            print(f"{key}: done", flush=True)
    off_palette(results, work, n, steps)
    figure(results, cfgs, modes, work, out)
    return 0


def off_palette(results, work: Path, n: int, steps: int) -> None:
    """"Too strong", as a number: the share of pixels farther than `OFF` (RGB distance) from every
    world colour and its texture tint, per setting and row (true pictures: 0). Read from the cached
    pictures: `evaluate`'s cache (docs/evaluation.md: OUT/cache/<key>/key.json, <seed>.png) and
    this script's own for cond_uniform."""
    done = results.get("off_palette") if results.done("off_palette") else {}
    if "true pictures" not in done:
        done["true pictures"] = common.estimate([off_share(it.image) for it in common.world_items(n)])
    for key in [k for k in results.data["parts"] if "@cfg" in k and k not in done]:
        mode, cfg = key.split("@cfg")
        rows = {row: cached_pictures(work, float(cfg), mode, row, n, steps) for row in ["no control", *ROWS.values()]}
        done[key] = {row: common.estimate([off_share(p) for p in pics]) for row, pics in rows.items() if pics}
    results.put("off_palette", done)


OFF = 48.0


def off_share(image) -> float:
    from controlnet.world.palette import COLOURS, texture_tint

    pal = np.array([c for rgb in COLOURS.values() for c in (rgb, texture_tint(rgb))], np.float32)
    d = np.sqrt(((image.reshape(-1, 1, 3).astype(np.float32) - pal[None]) ** 2).sum(-1)).min(1)
    return float((d > OFF).mean())


def cached_pictures(work: Path, cfg: float, mode: str, row: str, n: int, steps: int) -> list:
    """The n pictures of one setting and row from the newest complete cache folder that matches."""
    import json

    from controlnet.images import to_rgb8

    found = []
    for key_file in list((work / "eval" / "cache").glob("*/key.json")) + list((work / "cache").glob("*/key.json")):
        k = json.loads(key_file.read_text())
        if mode == UNIFORM or "row" in k:
            ok = k.get("row") == row and k.get("mode") == mode and k.get("cfg") == cfg and k.get("steps") == steps
        else:
            sampling, cn = k.get("sampling") or {}, (k.get("controlnet") or {}).get("path", "")
            ok = (k.get("prompt") == "none" and sampling.get("guidance_scale") == cfg and sampling.get("steps") == steps
                  and (sampling.get("mode") is None if row == "no control"
                       else sampling.get("mode") == mode and sampling.get("weight") == 1.0
                       and cn.endswith(f"controlnet-{row.split(':')[1]}")))
        files = [key_file.parent / f"{i}.png" for i in range(n)]
        if ok and all(f.is_file() for f in files):
            found.append((key_file.stat().st_mtime, files))
    return [to_rgb8(f) for f in max(found, key=lambda t: t[0])[1]] if found else []


def plan(cfgs, modes, both_cfg) -> list[tuple[str, float]]:
    """(mode, CFG) settings, most informative first: the cond-branch modes at every CFG, then the
    both-branch modes at `both_cfg` only."""
    from controlnet.pipeline.modes import cond_only

    first = [(m, c) for c in cfgs for m in modes if m != UNIFORM and (cond_only(m) or c == min(cfgs))]
    first += [(UNIFORM, c) for c in cfgs if UNIFORM in modes and c > 1]  # CFG 1: the same as balanced
    return first + [(m, c) for c in both_cfg for m in modes
                    if m != UNIFORM and not cond_only(m) and (m, c) not in first]


def run_setting(work: Path, n: int, steps: int, cfg: float, mode: str, fid: bool) -> dict:
    """One (mode, CFG) setting evaluated: the kept records, the seg row's layout F1, samples saved."""
    from controlnet.evaluation import EvalSettings, evaluate
    from controlnet.files import save_image
    from controlnet.metrics.world import world_scores

    s = EvalSettings(n=n, prompts=("none",), steps=steps, guidance_scale=cfg, scheduler="ddim", weight=1.0, mode=mode,
                     fid=fid, samples_in_grid=min(n, 64))  # every setting explicit: recommendations do not apply
    result = evaluate("mini", list(ROWS.values()), "world", work / "eval", settings=s, progress=False)
    out = {"records": [r for r in result["records"] if r["metric"] in KEEP.get((r["condition"], r["row"]), ())],
           "not_computed": {k: v for k, v in result["not_computed"].items() if k in ("fid", "kid")}}
    seg_pictures = result["samples"][("seg", "none", "mini:seg")]
    items = common.world_items(len(seg_pictures))
    layout = [world_scores("edges", img, it)["edge_f1"][0] for img, it in zip(seg_pictures, items)]
    out["records"].append({"condition": "seg", "row": "mini:seg", "metric": "layout_edge_f1",
                           **common.estimate(layout)})
    for (kind, _, row), pictures in result["samples"].items():
        if (kind, row) in KEEP:
            for i, img in enumerate(pictures[:GRID]):
                save_image(img, sample_path(work, cfg, mode, row, i))
    return out


def run_uniform(work: Path, n: int, steps: int, cfg: float, mode: str, fid: bool) -> dict:
    """The paper's cond-only arm, which no pipeline mode is (guess mode decays its scales): sampled
    here with `ControlUnit(mode="control", layer_scales=[1, ...])` on the same samples and seeds as
    `evaluate`, scored with the same functions (the evaluation has no option for layer scales)."""
    from controlnet.assets import resolve_controlnet, resolve_model
    from controlnet.checkpoints import load_controlnet
    from controlnet.files import save_image
    from controlnet.metrics.world import world_scores
    from controlnet.pipeline import ControlPipeline, ControlUnit

    pipe = ControlPipeline.from_pretrained(resolve_model("mini"))
    items = common.world_items(n)
    records, pictures = [], {}
    for kind, row in ROWS.items():
        cn = load_controlnet(resolve_controlnet(row))

        def units(idx, cn=cn, kind=kind):
            return [ControlUnit(cn, [items[i].conditions[kind] for i in idx], weight=1.0, mode="control",
                                layer_scales=[1.0] * cn.num_connections)]

        key = {"row": row, "mode": UNIFORM, "cfg": cfg, "steps": steps, "weights": common.weights_id((kind,))["sha256_16"]}
        pics = common.sample_cached(pipe, work, key, [""] * n, units, list(range(n)), steps, cfg)
        per = [world_scores("edges", img, it) | world_scores(kind, img, it) for img, it in zip(pics, items)]
        metrics = {"edges": ("edge_f1", "edge_f1_exact"), "seg": ("label_accuracy", "label_miou", "edge_f1")}[kind]
        for m in metrics:
            name = "layout_edge_f1" if kind == "seg" and m == "edge_f1" else m
            records.append({"condition": kind, "row": row, "metric": name,
                            **common.estimate([d[m][0] for d in per])})
        pictures[row] = pics
        for i, img in enumerate(pics[:GRID]):
            save_image(img, sample_path(work, cfg, mode, row, i))
    if fid:
        records += quality(pictures, items)
    return {"records": records, "not_computed": {} if fid else {"fid": "off", "kid": "off"}}


def quality(pictures: dict, items) -> list[dict]:
    """FID and KID of each row against the true pictures, as `controlnet evaluate` computes them."""
    from controlnet.evaluation import fid, kid
    from controlnet.evaluation.inception import inception_features, load_inception

    net = load_inception()
    ref = inception_features([it.image for it in items], net)
    out = []
    for row, pics in pictures.items():
        feats = inception_features(pics, net)
        k, k_std = kid(feats, ref, subsets=50, subset_size=max(2, len(feats) // 2))
        cond = "edges" if row == ROWS["edges"] else "seg"
        out += [{"condition": cond, "row": row, "metric": "fid", "value": fid(feats, ref), "ci_low": None,
                 "ci_high": None, "n": len(feats)},
                {"condition": cond, "row": row, "metric": "kid", "value": k, "ci_low": k - 1.96 * k_std,
                 "ci_high": k + 1.96 * k_std, "n": len(feats)}]
    return out


def sample_path(work: Path, cfg: float, mode: str, row: str, i: int) -> Path:
    return work / "samples" / f"cfg{cfg:g}" / mode / row.replace(":", "-").replace(" ", "_") / f"{i}.png"


def value(results, keys, condition, row, metric):
    """The record from the first of `keys` (settings) that has been run."""
    for key in keys:
        if metric == "off_palette" and results.done("off_palette") and key in results.get("off_palette"):
            return results.get("off_palette")[key].get(row)
        if results.done(key) and metric != "off_palette":
            for r in results.get(key)["records"]:
                if (r["condition"], r["row"], r["metric"]) == (condition, row, metric):
                    return r
    return None


PANELS = [("edges", "mini:edges", "edge_f1", "edges: edge F1 (2 px)"),
          ("edges", "mini:edges", "edge_f1_exact", "edges: edge F1 (exact)"),
          ("seg", "mini:seg", "layout_edge_f1", "seg: layout edge F1 (2 px)"),
          ("edges", "mini:edges", "kid", "edges row: KID (lower is better)"),
          ("edges", "mini:edges", "off_palette", "edges row: off-palette pixels (lower is better)")]


def figure(results, cfgs, modes, work: Path, out: Path) -> None:
    """Fidelity and quality against CFG, one line per mode; and a sample strip at a middle CFG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from controlnet.files import save_figure

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4 * len(PANELS), 3.4))
    for ax, (cond, row, metric, title) in zip(axes, PANELS):
        for mode in modes + (["no control"] if cond == "edges" else []):
            r_row, ms = (row, [mode]) if mode != "no control" else ("no control", modes)
            recs = [value(results, [f"{m}@cfg{c:g}" for m in ms], cond, r_row, metric) for c in cfgs]
            pts = [(c, r) for c, r in zip(cfgs, recs) if r is not None and r["value"] is not None]
            if not pts:
                continue
            x = [c for c, _ in pts]
            y = [r["value"] for _, r in pts]
            lo = [r["value"] - (r["ci_low"] if r["ci_low"] is not None else r["value"]) for _, r in pts]
            hi = [(r["ci_high"] if r["ci_high"] is not None else r["value"]) - r["value"] for _, r in pts]
            bars = ax.errorbar(x, y, yerr=[lo, hi], marker="o", capsize=3, label=mode,
                               linestyle="--" if mode == "no control" else "-")
            if mode in ("balanced", "prompt"):  # no prompt: both branches equal, CFG cannot change them
                ax.hlines(y[0], min(cfgs), max(cfgs), linestyles=":", colors=bars[0].get_color())
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("CFG scale")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, out / f"{NAME}.png")
    sample_strip(cfgs, modes, work, out)


def sample_strip(cfgs, modes, work: Path, out: Path) -> None:
    """Rows: samples at the middle CFG. Columns: edges map, no control, edges row per mode, seg map,
    seg row per mode."""
    from controlnet.files import save_image
    from controlnet.images import to_rgb8
    from controlnet.world.grid import image_grid

    cfg = cfgs[len(cfgs) // 2]
    items = common.world_items(GRID)
    rows = []
    for i, it in enumerate(items):
        paths = [first_file(sample_path(work, cfg, m, "no control", i) for m in modes)]
        paths += [first_file(sample_path(work, c, m, "mini:edges", i) for c in (cfg, min(cfgs))) for m in modes]
        seg = [first_file(sample_path(work, c, m, "mini:seg", i) for c in (cfg, min(cfgs))) for m in modes]
        if not all(p.is_file() for p in paths + seg):
            continue
        rows.append([common.rgb(it.conditions["edges"]), *[to_rgb8(p) for p in paths],
                     common.rgb(it.conditions["seg"]), *[to_rgb8(p) for p in seg]])
    if rows:
        save_image(image_grid(rows, scale=2), out / f"{NAME}_samples.png")


def first_file(paths) -> Path:
    """The first existing path (both-branch modes are the same at every CFG without a prompt)."""
    paths = list(paths)
    return next((p for p in paths if p.is_file()), paths[0])


if __name__ == "__main__":
    sys.exit(main())
