"""An evaluation's outputs: metrics.json (one record per row × metric), metrics.md (a table),
metrics.png (bars with their confidence intervals) and samples.png (condition | each row's picture)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from controlnet.files import save_figure, write_json, write_text


def write_reports(result: dict, out: Path) -> dict[str, Path]:
    paths = {"json": out / "metrics.json", "table": out / "metrics.md", "chart": out / "metrics.png",
             "grid": out / "samples.png"}
    public = {k: result[k] for k in ("settings", "records", "not_computed") if k in result}
    write_json(paths["json"], _finite(public))
    write_text(paths["table"], table(result))
    bar_chart(result, paths["chart"])
    samples_grid(result, paths["grid"])
    return paths


def _finite(obj):
    """NaN is not JSON: write null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _fmt(r: dict) -> str:
    if r["value"] is None or not math.isfinite(r["value"]):
        return "–"
    if r["ci_low"] is None or not math.isfinite(r["ci_low"]):
        return f"{r['value']:.3g}"
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def table(result: dict) -> str:
    """One table per condition kind: rows × prompt setting down, metrics across."""
    s = result.get("settings", {})
    lines = [f"# Evaluation: {s.get('n')} samples per row, {s.get('steps')} {s.get('scheduler')} steps, "
             f"CFG {s.get('guidance_scale')}, weight {s.get('weight')}, mode {s.get('mode')}, seeds "
             f"{s.get('seed')}+i; [{round(100 * s.get('level', 0.95))}% bootstrap CI]", ""]
    recs = result["records"]
    for kind in dict.fromkeys(r["condition"] for r in recs):
        mine = [r for r in recs if r["condition"] == kind]
        metrics = list(dict.fromkeys(r["metric"] for r in mine))
        arrows = [f"{m} {'↑' if next(r for r in mine if r['metric'] == m)['higher_is_better'] else '↓'}" for m in metrics]
        lines += [f"## condition: {kind}", "", "| prompt | row | " + " | ".join(arrows) + " |",
                  "|---|---|" + "---|" * len(metrics)]
        for prompt, row in dict.fromkeys((r["prompt"], r["row"]) for r in mine):
            cell = {r["metric"]: _fmt(r) for r in mine if r["prompt"] == prompt and r["row"] == row}
            lines.append(f"| {prompt} | {row} | " + " | ".join(cell.get(m, "–") for m in metrics) + " |")
        lines.append("")
    for metric, why in result.get("not_computed", {}).items():
        lines.append(f"- {metric}: {why}")
    return "\n".join(lines) + "\n"


def bar_chart(result: dict, path: Path) -> None:
    """One panel per (condition, metric); groups = prompt settings, bars = rows, error bars = CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [r for r in result["records"] if r["value"] is not None and math.isfinite(r["value"])]
    panels = list(dict.fromkeys((r["condition"], r["metric"]) for r in recs)) or [("", "")]
    cols = min(4, len(panels))
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 2.8 * nrows), squeeze=False)
    for ax, (kind, metric) in zip(axes.ravel(), panels):
        mine = [r for r in recs if r["condition"] == kind and r["metric"] == metric]
        _panel(ax, mine, f"{kind}: {metric}")
    for ax in axes.ravel()[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path)


def _panel(ax, recs: list[dict], title: str) -> None:
    prompts = list(dict.fromkeys(r["prompt"] for r in recs))
    rows = list(dict.fromkeys(r["row"] for r in recs))
    width = 0.8 / max(1, len(rows))
    for j, row in enumerate(rows):
        xs, ys, err = [], [], [[], []]
        for i, prompt in enumerate(prompts):
            r = next((r for r in recs if r["prompt"] == prompt and r["row"] == row), None)
            if r is None:
                continue
            xs.append(i + (j - (len(rows) - 1) / 2) * width)
            ys.append(r["value"])
            lo, hi = r["ci_low"], r["ci_high"]
            ok = lo is not None and math.isfinite(lo)
            err[0].append(max(0.0, r["value"] - lo) if ok else 0.0)
            err[1].append(max(0.0, hi - r["value"]) if ok else 0.0)
        ax.bar(xs, ys, width, yerr=err, capsize=2, label=row)
    ax.set_xticks(range(len(prompts)), prompts, fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)


def samples_grid(result: dict, path: Path) -> None:
    """For each condition kind and sample: the condition, then each row's picture (per prompt setting)."""
    from controlnet.files import save_image
    from controlnet.world.grid import image_grid

    grid_rows = []
    for kind, conds in result.get("conditions", {}).items():
        keys = [k for k in result["samples"] if k[0] == kind]
        for i, cond in enumerate(conds):
            pictures = [result["samples"][k][i] for k in keys if i < len(result["samples"][k])]
            grid_rows.append([_rgb(cond), *pictures])
    if not grid_rows:
        return
    save_image(image_grid(grid_rows, scale=2 if grid_rows[0][0].shape[0] <= 128 else 1), path)


def _rgb(a) -> np.ndarray:
    a = np.asarray(a)
    return np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a[..., :3]
