"""Markdown tables of the experiments' results (docs/reproduction/*.json), for docs/reproduction.md:
value [95% interval] per setting, so the page can be refreshed after a rerun.

    .venv/bin/python experiments/tables.py            # all experiments found
    .venv/bin/python experiments/tables.py exp4_cfg_rw -o DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def fmt(r: dict | None, digits: int = 3) -> str:
    if r is None or r.get("value") is None:
        return "–" if r is None else "undefined"
    lo, hi = r.get("ci_low"), r.get("ci_high")
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None and hi is not None else ""
    return f"{r['value']:.{digits}f}{ci}"


def exp4(data: dict) -> str:
    metrics = [("edges", "mini:edges", "edge_f1"), ("edges", "mini:edges", "edge_f1_exact"),
               ("seg", "mini:seg", "layout_edge_f1"), ("seg", "mini:seg", "label_accuracy"),
               ("edges", "mini:edges", "kid"), ("edges", "mini:edges", "fid")]
    lines = ["| mode | CFG | " + " | ".join(f"{c} {m}" for c, _, m in metrics) + " | edges off-palette |",
             "|---|---|" + "---|" * (len(metrics) + 1)]
    uncontrolled = {}
    off = data["parts"].get("off_palette", {})
    for key, part in data["parts"].items():
        if "@cfg" not in key:
            continue
        mode, cfg = key.split("@cfg")
        recs = {(r["condition"], r["row"], r["metric"]): r for r in part["records"]}
        lines.append(f"| {mode} | {cfg} | " + " | ".join(fmt(recs.get(m), 1 if m[2] == "fid" else 3)
                                                       for m in metrics)
                     + f" | {fmt(off.get(key, {}).get('mini:edges'))} |")
        if ("edges", "no control", "edge_f1") in recs:
            uncontrolled[cfg] = [recs.get(("edges", "no control", m)) for m in ("edge_f1", "edge_f1_exact", "kid")]
    for cfg, (f1, exact, kid) in uncontrolled.items():
        nc = next((v.get("no control") for k, v in off.items() if k.endswith(f"@cfg{cfg}") and "no control" in v), None)
        lines.append(f"| no control | {cfg} | {fmt(f1)} | {fmt(exact)} | | | {fmt(kid)} | | {fmt(nc)} |")
    if "true pictures" in off:
        lines.append(f"| true pictures | | | | | | | | {fmt(off['true pictures'])} |")
    return "\n".join(lines)


def exp5(data: dict) -> str:
    metrics = ["edge_f1", "label_accuracy", "depth_rmse", "depth_order_error"]
    lines = ["| prompt | control | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for key, part in data["parts"].items():
        prompt, kinds = key.split("|")
        lines.append(f"| {prompt} | {kinds.replace('+', ' + ')} | "
                     + " | ".join(fmt(part.get(m), 1 if m == "depth_rmse" else 3) for m in metrics) + " |")
    return "\n".join(lines)


def exp1(data: dict) -> str:
    parts = data["parts"]
    lines = []
    if "safety" in parts:
        s = parts["safety"]
        lines.append(f"Safety ({s['n']} pictures, {s['steps']} steps, CFG {s['cfg']}): zero init identical = "
                     f"{s['zero']['identical']} (max |diff| {s['zero']['max_abs_diff']}); Gaussian init identical = "
                     f"{s['gaussian']['identical']} (mean |diff| {s['gaussian']['mean_abs_diff_255']:.1f}/255)\n")
    if "curve" in parts:
        lines += ["| step | F1 no prompt | F1 caption | exact F1 no prompt |", "|---|---|---|---|"]
        for p in parts["curve"]["points"]:
            lines.append(f"| {p['step']} | {fmt(p['f1_empty'])} | {fmt(p['f1_prompt'])} | {fmt(p['f1_exact_empty'])} |")
        lines.append("\njump: " + json.dumps(parts["curve"]["jump"]))
    return "\n".join(lines)


TABLES = {"exp1_zero_conv": exp1, "exp4_cfg_rw": exp4, "exp5_composition": exp5}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", default=list(TABLES))
    p.add_argument("-o", "--out", type=Path, default=common.RESULTS)
    args = p.parse_args(argv)
    for name in args.names:
        path = args.out / f"{name}.json"
        if path.is_file():
            data = json.loads(path.read_text())
            print(f"### {name}\n\nweights: {json.dumps(data['header']['weights'])}\n\n{TABLES[name](data)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
