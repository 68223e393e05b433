"""Control-fidelity metrics: known values on small hand-made maps."""

import numpy as np
import pytest

from controlnet.evaluation import (
    color_map_miou,
    compare_maps,
    depth_order_error,
    depth_rmse,
    edge_f1,
    edge_precision_recall,
    mean_iou,
    metric_for,
    pixel_accuracy,
    soft_edge_ssim,
)


def square_edges(size=32, offset=0):
    e = np.zeros((size, size), np.uint8)
    a, b = 8 + offset, 24 + offset
    e[a, a:b] = e[b, a:b] = e[a:b + 1, a] = e[a:b + 1, b] = 255
    return e


def test_edge_f1_exact_and_tolerant():
    ref = square_edges()
    assert edge_f1(ref, ref, tolerance=0) == 1.0
    shifted = square_edges(offset=1)
    # a one-pixel shift: pixel-exact F1 collapses, a 1-px tolerance forgives it (diagonal moves need sqrt 2)
    assert edge_f1(shifted, ref, tolerance=0) < 0.2
    assert edge_f1(shifted, ref, tolerance=1.5) == pytest.approx(1.0)
    assert edge_f1(np.zeros_like(ref), ref) == 0.0
    assert edge_f1(np.zeros_like(ref), np.zeros_like(ref)) == 1.0


def test_edge_precision_recall_asymmetry():
    ref = square_edges()
    half = ref.copy()
    half[:, 16:] = 0  # predict only the left half of the contour
    p, r = edge_precision_recall(half, ref, tolerance=0)
    assert p == 1.0 and 0.3 < r < 0.7
    rgb = np.repeat(half[..., None], 3, axis=2)
    assert edge_f1(rgb, ref, tolerance=0) == pytest.approx(2 * p * r / (p + r))


def test_soft_edge_ssim():
    rng = np.random.default_rng(0)
    a = (rng.random((32, 32)) * 255).astype(np.uint8)
    assert soft_edge_ssim(a, a) == pytest.approx(1.0)
    assert soft_edge_ssim(a, 255 - a) < 0.0
    assert soft_edge_ssim(a, np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)) > 0.9


def test_segmentation_metrics():
    t = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    p = np.array([[0, 0, 0, 1], [0, 0, 0, 1]])
    assert pixel_accuracy(p, t) == 0.75
    # class 0: inter 4, union 6; class 1: inter 2, union 4
    assert mean_iou(p, t) == pytest.approx((4 / 6 + 2 / 4) / 2)
    assert pixel_accuracy(p, t, ignore_index=1) == 1.0
    assert mean_iou(t, t) == 1.0


def test_color_map_miou_snaps_to_palette():
    ref = np.zeros((8, 8, 3), np.uint8)
    ref[:, 4:] = (120, 120, 70)
    noisy = ref.astype(int) + np.random.default_rng(0).integers(-6, 7, ref.shape)
    assert color_map_miou(np.clip(noisy, 0, 255).astype(np.uint8), ref) == 1.0


def test_depth_metrics():
    ramp = np.tile(np.linspace(0, 1, 32), (32, 1))
    assert depth_rmse(ramp, ramp) == 0.0
    assert depth_rmse(ramp * 0.5, ramp) > 10
    assert depth_rmse(ramp * 0.5 + 0.2, ramp, align=True) == pytest.approx(0.0, abs=1e-6)
    assert depth_order_error(ramp, ramp) == 0.0
    assert depth_order_error(1 - ramp, ramp) == 1.0
    noise = np.random.default_rng(1).random((32, 32))
    assert 0.35 < depth_order_error(noise, ramp) < 0.65


def test_metric_choice_and_compare():
    assert metric_for("canny").name == "edge_f1"
    assert metric_for("softedge_hed").name == "ssim"
    assert not metric_for("depth").higher_is_better
    ref = np.repeat(square_edges()[..., None], 3, axis=2)
    assert compare_maps("canny", ref, ref) == 1.0


def test_canny_fidelity_of_a_drawn_image():
    """Re-extracting canny from an image drawn along the condition's contour scores high; from a blank, 0."""
    pytest.importorskip("controlnet.annotators")
    from controlnet.annotators import annotate
    from controlnet.evaluation import control_fidelity

    image = np.zeros((64, 64, 3), np.uint8)
    image[16:48, 16:48] = 200
    cond = annotate("canny", image, resolution=64)
    assert control_fidelity("canny", image, cond) == 1.0
    assert control_fidelity("canny", np.zeros_like(image), cond) == 0.0
