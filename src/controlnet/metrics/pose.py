"""Pose keypoint agreement as HumanSD (Ju et al. 2023, arXiv 2304.04269) scores pose control: COCO keypoint
AP (in %), the people re-detected in the generated picture against the condition's people as ground truth.

- OKS (COCO's object keypoint similarity): mean over the ground truth's present keypoints of
  exp(-d² / (2 s² k²)), s² the person's area, k = 2σ with COCO's per-keypoint σ (the 17 COCO body points
  in OpenPose-18 order; the neck, which COCO has not, is left out). The condition holds no person mask,
  so the area is that of the box around its keypoints.
- AP: per picture, detections (by score) take the best unmatched person with OKS ≥ t; over all pictures,
  the 101-point interpolated precision-recall area (pycocotools' COCOeval); mean over t = 0.50 … 0.95.
- The condition's people are read back from its OpenPose drawing: joints are discs in 18 distinct full
  colours (limbs are drawn at 60 %), a person is one connected drawing (overlapping people merge).
"""

from __future__ import annotations

import numpy as np

# COCO's σ per keypoint, in OpenPose-18 order (nose, neck, r/l arm, r/l leg, eyes, ears); neck: not scored
SIGMAS = np.array([.026, np.nan, .079, .072, .062, .079, .072, .062, .107, .087, .089, .107, .087, .089,
                   .025, .025, .035, .035])
OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_PEOPLE = 20  # COCO keypoint evaluation's maxDets


def pose_from_map(condition) -> list[np.ndarray]:
    """(18, 2) pixel keypoints (NaN missing) of each person drawn in an OpenPose condition map."""
    import cv2

    from controlnet.annotators.openpose_draw import BODY_COLORS

    rgb = np.asarray(condition)[..., :3]
    count, people = cv2.connectedComponents((rgb.max(axis=2) > 0).astype(np.uint8), connectivity=8)
    out = []
    for label in range(1, count):
        inside = people == label
        points = np.full((18, 2), np.nan)
        for part, colour in enumerate(BODY_COLORS):
            ys, xs = np.nonzero(inside & (rgb == colour).all(axis=2))
            if len(xs) >= 5:  # a radius-4 disc, not a stray anti-aliased pixel
                points[part] = xs.mean(), ys.mean()
        if np.isfinite(points).all(axis=1).sum() >= 2:
            out.append(points)
    return out[:MAX_PEOPLE]


def oks(detected: np.ndarray, truth: np.ndarray) -> float:
    """COCO OKS of one detected person against one true person, both (18, 2) pixels with NaN missing."""
    scored = np.isfinite(truth).all(axis=1) & np.isfinite(SIGMAS)
    if not scored.any():
        return 0.0
    present = truth[np.isfinite(truth).all(axis=1)]
    area = max(float(np.ptp(present[:, 0]) * np.ptp(present[:, 1])), 1.0)
    d2 = ((detected[scored] - truth[scored]) ** 2).sum(axis=1)
    similarity = np.exp(-d2 / (2 * area * (2 * SIGMAS[scored]) ** 2))
    return float(np.nan_to_num(similarity, nan=0.0).sum() / scored.sum())  # a missing detection scores 0


def picture_record(detected: list[np.ndarray], scores, truth: list[np.ndarray]) -> np.ndarray:
    """(MAX_PEOPLE + 1, 12) per-picture record: rows [present, score, matched at each t]; last row: people to find."""
    record = np.zeros((MAX_PEOPLE + 1, 2 + len(OKS_THRESHOLDS)))
    record[-1, 0] = len(truth)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")[:MAX_PEOPLE]
    similarity = np.array([[oks(detected[d], t) for t in truth] for d in order]).reshape(len(order), len(truth))
    for row, d in enumerate(order):
        record[row, :2] = 1.0, scores[d]
    for k, threshold in enumerate(OKS_THRESHOLDS):
        taken = np.zeros(len(truth), bool)
        for row in range(len(order)):
            candidates = np.where(~taken & (similarity[row] >= threshold), similarity[row], -1.0)
            if len(truth) and candidates.max() >= 0:
                taken[candidates.argmax()] = True
                record[row, 2 + k] = 1.0
    return record


def keypoint_ap(records) -> float:
    """COCO keypoint AP in % over pictures' records (NaN when no picture has anyone to find)."""
    records = np.asarray(records, np.float64).reshape(-1, MAX_PEOPLE + 1, 2 + len(OKS_THRESHOLDS))
    to_find = records[:, -1, 0].sum()
    if to_find == 0:
        return float("nan")
    found = records[:, :-1].reshape(-1, records.shape[2])
    found = found[found[:, 0] > 0]
    found = found[np.argsort(-found[:, 1], kind="mergesort")]
    aps = []
    for k in range(len(OKS_THRESHOLDS)):
        hits = np.cumsum(found[:, 2 + k])
        recall = hits / to_find
        precision = hits / np.arange(1, len(found) + 1)
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        index = np.searchsorted(recall, RECALL_POINTS, side="left")
        aps.append(np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0).mean()
                   if len(precision) else 0.0)
    return float(100.0 * np.mean(aps))
