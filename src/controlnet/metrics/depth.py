"""Depth fidelity: RMSE on the 0-255 scale (ControlNet++'s protocol) and the ordinal error.

Monocular depth is relative, so RMSE can first fit the prediction to the reference by least-squares
scale and shift (`align=True`); the ordinal error asks only whether random pixel pairs keep their
nearer/farther order, which is what a depth ControlNet must get right.
"""

from __future__ import annotations

import numpy as np

from controlnet.metrics.edges import to_gray01


def depth_rmse(pred, target, align: bool = False) -> float:
    """Root mean square difference of two depth maps on the 0-255 scale (uint8 maps or floats in [0, 1])."""
    p, t = to_gray01(pred) * 255.0, to_gray01(target) * 255.0
    if p.shape != t.shape:
        raise ValueError(f"depth maps differ in size: {p.shape} vs {t.shape}")
    if align:
        a = np.stack([p.ravel(), np.ones(p.size)], 1)
        (scale, shift), *_ = np.linalg.lstsq(a, t.ravel(), rcond=None)
        p = p * scale + shift
    return float(np.sqrt(np.mean((p - t) ** 2)))


def depth_order_error(pred, target, pairs: int = 20_000, min_gap: float = 0.02, seed: int = 0) -> float:
    """Fraction of random pixel pairs (whose reference depths differ by more than `min_gap` of the range)
    that the prediction orders the other way round. 0 is perfect, 0.5 is chance."""
    p, t = to_gray01(pred).ravel(), to_gray01(target).ravel()
    if p.shape != t.shape:
        raise ValueError("depth maps differ in size")
    rng = np.random.default_rng(seed)
    i, j = rng.integers(0, t.size, pairs), rng.integers(0, t.size, pairs)
    dt = t[i] - t[j]
    keep = np.abs(dt) > min_gap
    if not keep.any():
        return 0.0
    return float((np.sign(p[i] - p[j])[keep] != np.sign(dt[keep])).mean())
