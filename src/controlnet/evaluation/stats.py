"""Means with bootstrap confidence intervals: how sure is a figure measured on n pictures?

Percentile bootstrap over pictures (resample the n pictures with replacement, recompute the
mean); a weighted mean sum(w·v)/sum(w) covers ratios counted over pairs (depth order). The
resampling seed is fixed, so a report is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlnet import checks

RESAMPLES = 1000


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float
    n: int


def check_level(level) -> float:
    """A confidence level strictly between 0 and 1 (0.95, not 95)."""
    return checks.number("confidence level", level, lo=0.0, hi=1.0, lo_open=True, hi_open=True)


def mean_ci(values, weights=None, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Weighted mean of `values` with a percentile-bootstrap interval at `level`."""
    level = check_level(level)
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    if v.size == 0 or w.sum() <= 0:
        return Estimate(float("nan"), float("nan"), float("nan"), int(v.size))
    value = float((v * w).sum() / w.sum())
    idx = np.random.default_rng(seed).integers(0, v.size, (resamples, v.size))
    wb = w[idx]
    den = wb.sum(1)
    means = ((v[idx] * wb).sum(1) / np.where(den > 0, den, 1))[den > 0]
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha]) if means.size else (value, value)
    return Estimate(value, float(low), float(high), int(v.size))


def statistic_ci(per_picture, statistic, level: float = 0.95, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """`statistic` of all pictures' records together (e.g. a dataset-level mIoU from per-picture
    counts, not a mean of per-picture figures), with a percentile-bootstrap interval over pictures."""
    level = check_level(level)
    records = np.asarray(per_picture, dtype=np.float64)
    n = len(records)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    values = np.array([statistic(records[rng.integers(0, n, n)]) for _ in range(resamples)])
    values = values[~np.isnan(values)]
    alpha = (1 - level) / 2
    value = float(statistic(records))
    low, high = np.quantile(values, [alpha, 1 - alpha]) if values.size else (value, value)
    return Estimate(value, float(low), float(high), n)
