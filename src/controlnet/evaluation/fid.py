"""FID and KID from Inception features (Heusel et al. 2017; Bińkowski et al. 2018).

FID = |mu1 - mu2|² + tr(S1 + S2 - 2 (S1^½ S2 S1^½)^½), the matrix square root taken through the
eigen-decomposition of symmetric matrices (stable where scipy's `sqrtm` of the non-symmetric
S1·S2 returns complex noise). KID is the unbiased MMD² with the cubic polynomial kernel
k(x, y) = (x·y/d + 1)³, averaged over random subsets as in `torchmetrics`/clean-fid.
Small n biases FID upwards (KID is unbiased): compare figures measured on the same n.
"""

from __future__ import annotations

import numpy as np

from controlnet.errors import InputError


def _stats(features) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise InputError(f"FID needs at least 2 pictures per set, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid(features_a, features_b) -> float:
    """FID between two sets of (N, D) features. With fewer pictures than dimensions (the usual case
    here: D = 2048) the trace term is computed exactly in picture space: the non-zero eigenvalues of
    S1·S2 are the squared singular values of A·Bᵀ/sqrt((n1-1)(n2-1)), A and B the centred features."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    for f in (a, b):
        if f.ndim != 2 or len(f) < 2:
            raise InputError(f"FID needs at least 2 pictures per set, got {len(f)}")
    if min(len(a), len(b)) >= a.shape[1]:
        return max(0.0, frechet_distance(*_stats(a), *_stats(b)))
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    tr_covmean = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    mean_term = ((a.mean(0) - b.mean(0)) ** 2).sum()
    return max(0.0, float(mean_term + (ca ** 2).sum() / na + (cb ** 2).sum() / nb - 2 * tr_covmean))


def kid(features_a, features_b, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased polynomial-kernel MMD² over random subsets of both sets."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise InputError(f"KID needs at least 2 pictures per set, got {min(len(a), len(b))}")
    rng = np.random.default_rng(seed)
    d = a.shape[1]
    scores = []
    for _ in range(subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T / d + 1) ** 3), ((y @ y.T / d + 1) ** 3), ((x @ y.T / d + 1) ** 3)
        off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        scores.append(off - 2 * kxy.mean())
    return float(np.mean(scores)), float(np.std(scores))
