"""How much the resize to 299 px moves FID: the standard TF1 bilinear against PyTorch's bilinear.

    python benchmarks/fid_resize.py [--n 48] [--size 256]

Two sets of miniature-world pictures (plain vs textured backgrounds, other samples), FID measured
with the bundled Inception after each resize; prints both and their ratio (docs/evaluation.md).
"""

from __future__ import annotations

import argparse

from controlnet.evaluation import fid
from controlnet.evaluation.inception import inception_features, load_inception
from controlnet.world import World


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=48)
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()
    a = [s.image for s in World(seed=3, size=args.size).take(args.n, start=0)]
    b = [s.image for s in World(seed=3, size=args.size, textured=0.5).take(args.n, start=10_000)]
    net = load_inception()
    scores = {rule: fid(inception_features(a, net, resize=rule), inception_features(b, net, resize=rule))
              for rule in ("tf1", "torch")}
    print(f"n={args.n} size={args.size}: FID tf1 {scores['tf1']:.3f}, torch {scores['torch']:.3f}, "
          f"torch/tf1 {scores['torch'] / scores['tf1']:.4f}")


if __name__ == "__main__":
    main()
