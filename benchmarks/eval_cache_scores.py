"""Extra scores from the pictures `controlnet evaluate` cached (OUT/cache/<key>/<seed>.png, key.json):

  edges OUT...  edge F1 at 0, 1 and 2 px of every cached edges row under the perfect prompt (the issue-12
                goals were set with the first benchmark's 1-px tolerance; evaluate reports 2 px and exact)
  depth OUT     depth-order error, controlled minus no control, paired percentile bootstrap over pictures
  pairs OUT     every two ControlNet rows of the run's kind, paired: edges 1-px F1, seg label accuracy,
                depth-order error (the union against the single ControlNet)

Usage: python benchmarks/eval_cache_scores.py edges eval-a eval-b | depth eval-depth (docs/mini.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from controlnet.evaluation.data import open_data
from controlnet.evaluation.stats import mean_ci
from controlnet.images import load_image
from controlnet.metrics.edges import edge_f1
from controlnet.metrics.fidelity import reextract
from controlnet.metrics.world import order_errors


def _rows(out: Path, kind: str):
    """(label, key, pictures) of the cached rows of `kind` (and no control) under the perfect prompt."""
    settings = json.loads((out / "metrics.json").read_text())["settings"]
    n, seed = settings["n"], settings["seed"]  # picture i is drawn with seed + i, cached as <seed + i>.png
    for key_file in sorted((out / "cache").glob("*/key.json")):
        key = json.loads(key_file.read_text())
        if key["prompt"] != "perfect" or key.get("kind") not in (kind, None):
            continue
        label = "no control" if not key["controlnet"] else "/".join(Path(key["controlnet"]["path"]).parts[-2:])
        yield label, key, [np.asarray(load_image(key_file.parent / f"{seed + i}.png")) for i in range(n)]


def edges(out: Path) -> None:
    for label, key, pictures in _rows(out, "edges"):
        data = open_data("world", pictures[0].shape[0], ("edges",), None, None)
        conditions = [data.item(i).conditions["edges"] for i in range(len(pictures))]
        maps = [reextract("canny", p) for p in pictures]
        scores = []
        for tol in (0, 1, 2):
            e = mean_ci([edge_f1(m, c, tolerance=tol) for m, c in zip(maps, conditions)])
            scores.append(f"{tol} px {e.value:.3f} [{e.low:.3f}, {e.high:.3f}]")
        s = key["sampling"]
        print(f"{out.name} | {label} | CFG {s['guidance_scale']} weight {s['weight']} | n={len(pictures)} | {' | '.join(scores)}")


def _order_errors(out: Path) -> dict[str, np.ndarray]:
    """{row: (wrong, judged) per picture} of the depth rows."""
    rows = {}
    for label, _, pictures in _rows(out, "depth"):
        data = open_data("world", pictures[0].shape[0], ("depth",), None, None)
        rows[label] = np.array([order_errors(p, data.item(i).sample) for i, p in enumerate(pictures)])
    return rows


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) - mean(b) over the same pictures, or the ratio of sums for (wrong, judged) rows, with a
    paired percentile bootstrap over pictures (2,000 resamples, seed 0): (difference, low, high)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(a), (2000, len(a)))

    def stat(x, i):
        return x[i, 0].sum(-1) / np.maximum(x[i, 1].sum(-1), 1) if x.ndim == 2 else x[i].mean(-1)

    diffs = stat(a, idx) - stat(b, idx)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    every = np.arange(len(a))
    return float(stat(a, every) - stat(b, every)), float(lo), float(hi)


def depth(out: Path) -> None:
    rows = _order_errors(out)
    u = rows["no control"]
    for name, c in rows.items():
        if name == "no control":
            continue
        diff, lo, hi = _paired(c, u)
        err_c, err_u = c[:, 0].sum() / c[:, 1].sum(), u[:, 0].sum() / u[:, 1].sum()
        print(f"{name}: depth-order error {err_c:.3f} vs {err_u:.3f} (no control) over {c[:, 1].sum()} pairs; "
              f"difference {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired bootstrap, 95%)")


def pairs(out: Path) -> None:
    """Every two controlled rows of one kind, paired over the same pictures: edges 1-px F1, seg label
    accuracy, depth-order error (e.g. the union against the single ControlNet, docs/mini.md)."""
    from controlnet.metrics.world import label_scores

    settings = json.loads((out / "metrics.json").read_text())["settings"]
    kind = settings["data"].split(":", 1)[1]
    if kind == "depth":
        rows, metric = _order_errors(out), "depth-order error"
    else:
        rows, metric = {}, "1-px edge F1" if kind == "edges" else "label accuracy"
        for label, _, pictures in _rows(out, kind):
            data = open_data("world", pictures[0].shape[0], (kind,), None, None)
            items = [data.item(i) for i in range(len(pictures))]
            rows[label] = np.array([edge_f1(reextract("canny", p), it.conditions["edges"], tolerance=1) if kind == "edges"
                                    else label_scores(p, it.sample)[0] for p, it in zip(pictures, items)])
    labels = [k for k in rows if k != "no control"]
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            diff, lo, hi = _paired(rows[a], rows[b])
            print(f"{out.name} | {metric} | {a} - {b} = {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired bootstrap, 95%)")


if __name__ == "__main__":
    what, outs = sys.argv[1], [Path(a) for a in sys.argv[2:]]
    for out in outs:
        {"edges": edges, "depth": depth, "pairs": pairs}[what](out)
