"""Pose keypoint AP (controlnet.metrics.pose: HumanSD's convention, COCO keypoint AP over OKS 0.50-0.95 of the
people re-detected in the generated picture against the condition's people) and its place in `evaluate`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controlnet.annotators.openpose import Person, draw
from controlnet.evaluation import protocol
from controlnet.metrics import pose as M

DATA = Path(__file__).parent / "data"
# a standing person in a unit box (x, y), OpenPose-18 order, arms out
SKELETON = np.array([[0.50, 0.10], [0.50, 0.22], [0.36, 0.22], [0.22, 0.36], [0.14, 0.50], [0.64, 0.22],
                     [0.78, 0.34], [0.88, 0.46], [0.42, 0.55], [0.40, 0.75], [0.40, 0.95], [0.58, 0.55],
                     [0.60, 0.75], [0.60, 0.95], [0.46, 0.07], [0.54, 0.07], [0.42, 0.09], [0.58, 0.09]])
H, W = 256, 384


def two_people() -> list[np.ndarray]:
    """Pixel keypoints of two people side by side, not touching."""
    return [SKELETON * [150, 230] + [x, 10] for x in (20.3, 210.7)]


def condition(people) -> np.ndarray:
    return draw([Person(p / [W, H], 1.0, 18) for p in people], H, W)


def test_people_are_read_back_from_the_drawing():
    truth = two_people()
    found = sorted(M.pose_from_map(condition(truth)), key=lambda p: p[0, 0])
    assert len(found) == 2
    for got, want in zip(found, truth):
        assert np.abs(got - np.floor(want)).max() < 0.5  # discs are drawn at the integer pixel


def test_oks_is_one_for_the_same_pose_and_falls_with_distance():
    truth = two_people()[0]
    assert M.oks(truth, truth) == pytest.approx(1.0)
    near, far = M.oks(truth + 3, truth), M.oks(truth + 30, truth)
    assert 1.0 > near > far > 0.0
    missing = truth.copy()
    missing[[2, 3, 4]] = np.nan  # a missing detected keypoint scores 0, the neck is never scored
    assert M.oks(missing, truth) == pytest.approx(14 / 17)


def _ap(detections, scores, truth) -> float:
    return M.keypoint_ap(np.stack([M.picture_record(detections, scores, truth)]))


def test_keypoint_ap_follows_cocoeval():
    truth = two_people()
    assert _ap(truth, [0.9, 0.8], truth) == pytest.approx(100.0)
    assert _ap([truth[0]], [0.9], truth) == pytest.approx(100 * 51 / 101)  # recall stops at 0.5
    assert _ap([t + 200 for t in truth], [0.9, 0.8], truth) == 0.0
    # a false positive ranked first: precision 1/2 at every recall point
    assert _ap([truth[0] + 200, truth[0]], [0.9, 0.8], truth[:1]) == pytest.approx(50.0)
    assert np.isnan(M.keypoint_ap(np.stack([M.picture_record(truth, [1, 1], [])])))


def test_evaluate_scores_pose_with_dwpose_or_openpose(tmp_path, monkeypatch):
    import shutil

    from controlnet.annotators import dwpose

    assert protocol.not_computed(("openpose",), False, tmp_path, 512)["cnpp_pose_ap"].startswith("not computed: give")
    (tmp_path / "body_pose_model.pth").write_bytes(b"x")
    assert protocol.pose_detector(tmp_path).endswith("body_pose_model.pth")
    (tmp_path / "openpose").mkdir()
    shutil.copy(DATA / "dwpose_yolox_tiny.onnx", tmp_path / "openpose" / "yolox_l.onnx")
    assert protocol.pose_detector(tmp_path).endswith("body_pose_model.pth")  # half of DWPose is not enough
    shutil.copy(DATA / "dwpose_rtmpose_tiny.onnx", tmp_path / "openpose" / "dw-ll_ucoco_384.onnx")
    assert protocol.pose_detector(tmp_path).endswith("yolox_l.onnx")
    assert "cnpp_pose_ap" not in protocol.not_computed(("dw_openpose_full",), False, tmp_path, 512)
    truth = two_people()
    found = [Person(p / [W, H], s, 18) for p, s in zip(truth, (0.9, 0.7))]
    monkeypatch.setattr(dwpose, "people", lambda image, model: found)
    images = [np.zeros((H, W, 3), np.uint8)] * 3
    est = protocol.estimate(protocol.POSE_METRIC, images, [condition(truth)] * 3, tmp_path, 0.95)
    assert est.value == pytest.approx(100.0) and est.n == 3
