"""The sweep behind mini-dit:edges' recommended settings (docs/mini.md, "The miniature transformer base").

For each (CFG, weight) it runs `controlnet evaluate --model mini-dit --controlnet mini-dit:edges
--data world:edges --n N --steps S --cfg G --weight W --no-fid -o OUT/cfgG-wW` in this one process (the
models load once per setting, the uncontrolled rows are shared through the cache key), then prints edge
F1 at 0, 1 and 2 px with intervals for the controlled and uncontrolled rows (benchmarks/eval_cache_scores.py)
and the prompt adherence evaluate measured.

Usage: python benchmarks/mini_dit_sweep.py OUT [--n 32] [--steps 20] [--grid 1:1,3:1,3:2,5:2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from controlnet.evaluation import evaluate  # noqa: E402
from eval_cache_scores import edges  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--grid", default="1:1,3:1,3:2,5:2", help="CFG:weight pairs")
    p.add_argument("--model", default="mini-dit")
    p.add_argument("--controlnet", default="mini-dit:edges")
    args = p.parse_args()
    for pair in args.grid.split(","):
        cfg, weight = (float(x) for x in pair.split(":"))
        out = args.out / f"cfg{cfg:g}-w{weight:g}"
        result = evaluate(args.model, [args.controlnet], "world:edges", out, n=args.n, steps=args.steps,
                          guidance_scale=cfg, weight=weight, fid=False, progress=False)
        adherence = {r["row"]: r["value"] for r in result["records"] if r["metric"] == "prompt_adherence"}
        print(f"CFG {cfg:g} weight {weight:g}: prompt adherence " +
              ", ".join(f"{k} {v:.2f}" for k, v in adherence.items()), flush=True)
        edges(out)


if __name__ == "__main__":
    main()
