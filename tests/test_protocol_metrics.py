"""The ControlNet++ protocol figures of `controlnet evaluate` (controlnet.metrics.protocol): the
arithmetic on hand-computable maps, kornia's canny and torchmetrics' MS-SSIM as the protocol calls
them, and `evaluate` computing a figure when the detector's weights are in the models folder and
saying "not computed: give ..." when they are not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bad_input_tools import run_cli
from controlnet.annotators.local_models import ENV_VAR
from controlnet.metrics import protocol as P


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_binary_f1_by_hand():
    pred, target = np.zeros((4, 4), bool), np.zeros((4, 4), bool)
    pred[0, :4] = True  # 4 predicted
    target[0, 1:4] = target[1, 0:3] = True  # 6 expected, 3 of them predicted
    assert P.binary_f1(pred, target) == pytest.approx(100 * 2 * 3 / (4 + 6))
    assert P.binary_f1(pred, pred) == 100.0
    assert P.binary_f1(np.zeros((4, 4)), np.zeros((4, 4))) == 0.0  # torchmetrics' zero_division


def test_canny_f1_reads_kornias_canny_of_the_picture():
    pytest.importorskip("kornia", reason="the eval extra is not installed")
    import torch
    from kornia.filters import canny

    picture = np.zeros((48, 48, 3), np.uint8)
    picture[12:36, 10:30] = (200, 120, 40)
    edges = canny(torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255.0, 0.1, 0.2)[1][0, 0].numpy()
    condition = (edges * 255).astype(np.uint8)
    assert condition.any() and P.canny_f1(picture, condition) == 100.0
    shifted = np.roll(condition, 3, axis=1)
    assert P.canny_f1(picture, shifted) == pytest.approx(P.binary_f1(edges > 0.5, shifted > 127))
    assert P.canny_f1(picture, shifted) < 50.0


def test_ms_ssim_as_torchmetrics_module_and_its_size_limit():
    import torch
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (2, 192, 176)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    assert P.ms_ssim(a[0], a[0]) == pytest.approx(1.0, abs=1e-6)
    module = MultiScaleStructuralSimilarityIndexMeasure(data_range=1.0)  # as eval_edge.py batches 4 groups
    batched = float(module(torch.from_numpy(b / 255.0).float()[:, None], torch.from_numpy(a / 255.0).float()[:, None]))
    assert np.mean([P.ms_ssim(b[i], a[i]) for i in range(2)]) == pytest.approx(batched, abs=1e-5)
    with pytest.raises(ValueError, match="at least 161 px"):
        P.ms_ssim(a[0, :128, :128], a[0, :128, :128])


def test_depth_quantised_as_the_protocol_saves_it():
    depth = np.array([[0.0, 1.0, 2.0]])  # / max -> 0, .5, 1 -> ×255 truncated
    assert P.depth_to_protocol_gray(depth).tolist() == [[0, 127, 255]]
    assert P.condition_to_protocol_gray(np.array([[10, 20, 30]], np.uint8)).tolist() == [[0, 127, 255]]
    assert P.depth_rmse(np.array([[0, 3]], np.uint8), np.array([[4, 3]], np.uint8)) == pytest.approx(np.sqrt(8))


def test_miou_is_dataset_level_as_mmseg():
    """Picture 1: class 0 everywhere predicted, half of it truly class 1; picture 2: all class 1, right.
    Summed counts: class 0 IoU 2/4, class 1 IoU 4/6 -> 58.33 %; a mean of per-picture mIoUs would differ."""
    p1, t1 = np.array([[0, 0, 0, 0]]), np.array([[0, 0, 1, 1]])
    p2, t2 = np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]])
    c1, c2 = P.intersect_union(p1, t1, 2), P.intersect_union(p2, t2, 2)
    assert c1.tolist() == [[2, 0], [4, 2]] and c2.tolist() == [[0, 4], [0, 4]]
    assert P.dataset_miou(np.stack([c1, c2])) == pytest.approx(100 * (2 / 4 + 4 / 6) / 2)
    ignored = P.intersect_union(np.array([[0, 1]]), np.array([[0, 255]]), 2)  # mmseg's ignore index
    assert ignored.tolist() == [[1, 0], [1, 0]]


def test_dataset_statistic_interval():
    from controlnet.evaluation.stats import statistic_ci

    same = np.stack([P.intersect_union(np.array([[0, 1]]), np.array([[0, 1]]), 2)] * 5)
    est = statistic_ci(same, P.dataset_miou)
    assert (est.value, est.low, est.high, est.n) == (100.0, 100.0, 100.0, 5)
    mixed = np.stack([P.intersect_union(np.array([[0, 1]]), t, 2) for t in (np.array([[0, 1]]), np.array([[1, 0]]))] * 4)
    est = statistic_ci(mixed, P.dataset_miou)
    assert est.low < est.value < est.high


def test_not_computed_says_what_to_give(tmp_path):
    from controlnet.evaluation import protocol

    notes = protocol.not_computed(("softedge_hed", "depth", "seg_ade20k", "openpose"), False, None, 512)
    assert notes["cnpp_hed_ssim"].startswith("not computed: give ControlNetHED.pth")
    assert "huggingface.co/lllyasviel/Annotators" in notes["cnpp_hed_ssim"] and ENV_VAR in notes["cnpp_hed_ssim"]
    assert notes["cnpp_depth_rmse"].startswith("not computed: give a transformers folder named depth: put it in")
    assert "dpt" in notes["cnpp_depth_rmse"]
    assert notes["cnpp_ade20k_miou"].startswith("not computed: give a transformers folder named seg_ade20k")
    assert "OpenPose" in notes["cnpp_pose_ap"] and "DWPose" in notes["cnpp_pose_ap"]
    (tmp_path / "hed").mkdir()
    (tmp_path / "hed" / "ControlNetHED.pth").write_bytes(b"x")
    assert "cnpp_hed_ssim" not in protocol.not_computed(("softedge_hed",), False, tmp_path, 512)
    assert "161 px" in protocol.not_computed(("softedge_hed",), False, tmp_path, 64)["cnpp_hed_ssim"]
    assert "cnpp_ade20k_miou" not in protocol.not_computed(("seg",), True, None, 64)  # world colours: not ADE20K


def test_evaluate_computes_depth_rmse_from_the_models_folder_and_names_what_is_missing(tmp_path, capsys):
    from controlnet.world import export
    from test_annotators_learned import save_dpt

    models = tmp_path / "models"
    save_dpt(models / "depth")
    data = export(tmp_path / "data", 2, layout="imagefolder", condition="depth", size=64, progress=False)
    args = ["evaluate", "--model", "mini", "--steps", "2", "--no-fid", "--grid-samples", "1", "--no-uncontrolled",
            "--controlnet", "mini:depth", "--data", data, "--annotator", "depth", "--n", "2"]
    code, _, err = run_cli([*args, "--models-dir", models, "-o", tmp_path / "with"], capsys)  # --annotator's too
    assert code == 0, err
    result = json.loads((tmp_path / "with" / "metrics.json").read_text())
    assert {"depth_rmse", "cnpp_depth_rmse"} <= {r["metric"] for r in result["records"]}
    rmse = [r for r in result["records"] if r["metric"] == "cnpp_depth_rmse"]
    assert len(rmse) == 1 and rmse[0]["n"] == 2 and not rmse[0]["higher_is_better"]
    assert 0 <= rmse[0]["ci_low"] <= rmse[0]["value"] <= rmse[0]["ci_high"] <= 255
    assert "cnpp_depth_rmse" not in result["not_computed"]
    code, _, err = run_cli([*args, "--annotator-param", f"model={models / 'depth'}", "-o", tmp_path / "without"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "without" / "metrics.json").read_text())
    assert not any(r["metric"] == "cnpp_depth_rmse" for r in result["records"])
    assert result["not_computed"]["cnpp_depth_rmse"].startswith("not computed: give a transformers folder named depth")


def test_each_detector_scores_its_own_maps_at_the_ceiling(tmp_path):
    """HED / lineart SSIM and ADE20K mIoU through the models folder: a picture against the map its own
    detector draws scores 1.0 / 100 %; against another picture's map, less."""
    import torch
    from skimage import data

    from controlnet.annotators.ade20k import ADE20K_PALETTE
    from controlnet.annotators.hed_network import ControlNetHED
    from controlnet.annotators.lineart_network import LineartGenerator
    from controlnet.annotators.segmentation import predict_labels
    from controlnet.evaluation import protocol
    from controlnet.metrics.fidelity import reextract
    from test_annotators_learned import save_upernet

    torch.manual_seed(0)
    (tmp_path / "hed").mkdir()
    torch.save(ControlNetHED().state_dict(), tmp_path / "hed" / "ControlNetHED.pth")  # sd-webui-controlnet's layout
    torch.save(LineartGenerator().state_dict(), tmp_path / "sk_model.pth")
    save_upernet(tmp_path / "seg_ade20k")
    pictures = [np.ascontiguousarray(p[:192, :192]) for p in (data.coffee(), data.chelsea())]
    for metric, annotator in ((protocol.HED, "softedge_hed"), (protocol.LINEART, "lineart_realistic")):
        weights = protocol.weights_for(metric, tmp_path)
        own = [reextract(annotator, p, model=weights) for p in pictures]
        assert protocol.estimate(metric, pictures, own, tmp_path, 0.95).value == pytest.approx(1.0, abs=1e-6)
        assert protocol.estimate(metric, pictures, own[::-1], tmp_path, 0.95).value < 0.99
    labels = [ADE20K_PALETTE[predict_labels(p, tmp_path / "seg_ade20k")] for p in pictures]
    est = protocol.estimate(protocol.ADE20K, pictures, labels, tmp_path, 0.95)
    assert (est.value, est.n) == (100.0, 2)
    assert protocol.estimate(protocol.ADE20K, pictures, [np.roll(m, 40, 1) for m in labels], tmp_path, 0.95).value < 100


def save_depth_anything(folder):
    """A tiny random Depth Anything (transformers' DepthAnythingForDepthEstimation) saved like a hub folder."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessorPil,
    )

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37,
                            image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    config = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, patch_size=14,
                                 neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=16, head_hidden_size=8)
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=False, ensure_multiple_of=14).save_pretrained(folder)
    return folder


def test_depth_rmse_with_a_depth_anything_folder(tmp_path):
    """Depth Anything from a local folder named `depth`: a picture against its own protocol map scores 0,
    against the map moved sideways more."""
    from controlnet.annotators.depth import predict_depth
    from controlnet.evaluation import protocol

    save_depth_anything(tmp_path / "depth")
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (64, 80, 3)).astype(np.uint8) for _ in range(2)]
    own = [P.depth_to_protocol_gray(predict_depth(p, tmp_path / "depth")) for p in pictures]
    assert all(m.min() == 0 and m.max() == 255 for m in own)  # min-max scaling leaves them as they are
    assert protocol.estimate(protocol.DEPTH, pictures, own, tmp_path, 0.95).value == 0.0
    moved = [np.roll(m, 20, axis=1) for m in own]
    expected = np.mean([P.depth_rmse(a, b) for a, b in zip(own, moved)])
    assert expected > 0
    assert protocol.estimate(protocol.DEPTH, pictures, moved, tmp_path, 0.95).value == pytest.approx(expected)


def test_ade20k_miou_with_a_oneformer_or_upernet_folder(tmp_path):
    """evaluate's ADE20K mIoU reads seg_ofade20k (OneFormer) or seg_ufade20k (UperNet) when seg_ade20k is not
    there, at the size the module runs: a picture against its own map scores 100 %, against another class 0."""
    from controlnet.annotators import annotate
    from controlnet.annotators.ade20k import ADE20K_PALETTE
    from controlnet.annotators.segmentation import TEST_SIZE, predict_labels
    from controlnet.evaluation import protocol
    from test_annotators_learned import save_upernet
    from test_annotators_segmentation import PHOTOS, save_oneformer

    save_oneformer(tmp_path / "of" / "seg_ofade20k")
    save_upernet(tmp_path / "un" / "seg_ufade20k")
    pictures = PHOTOS[:2]
    for folder, module in ((tmp_path / "of", "seg_ofade20k"), (tmp_path / "un", "seg_ufade20k")):
        assert "cnpp_ade20k_miou" not in protocol.not_computed((module,), False, folder, 64)
        assert protocol.weights_for(protocol.ADE20K, folder) == str(folder / module)
        own = [annotate(module, p, resolution=min(p.shape[:2]), model=folder / module) for p in pictures]
        assert protocol.estimate(protocol.ADE20K, pictures, own, folder, 0.95).value == 100.0
        labels = [predict_labels(p, folder / module, TEST_SIZE[module]) for p in pictures]
        other = [ADE20K_PALETTE[(label + 1) % 150] for label in labels]
        assert protocol.estimate(protocol.ADE20K, pictures, other, folder, 0.95).value == 0.0
    note = protocol.not_computed(("seg_ade20k",), False, tmp_path, 64)["cnpp_ade20k_miou"]
    assert note.endswith("(or one named seg_ofade20k or seg_ufade20k or upernet_global_small.pth)")

