"""Learned annotators end to end from local files: tiny random transformers models, random HED/lineart weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from controlnet.annotators import annotate
from controlnet.annotators.ade20k import ADE20K_PALETTE
from controlnet.errors import InputError, MissingFileError
from detector_device import assert_runs_on_the_network_device

COFFEE = data.coffee()  # 400×600


def save_dpt(folder):
    """A 4-layer DPT (the MiDaS architecture class) with its processor, saved like a hub folder."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessorPil

    torch.manual_seed(0)
    config = DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=64,
        patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5],
    )
    DPTForDepthEstimation(config).save_pretrained(folder)
    DPTImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dpt_folder(tmp_path_factory):
    return save_dpt(tmp_path_factory.mktemp("dpt"))


def save_upernet(folder, num_labels=150):
    from transformers import (
        ConvNextConfig,
        SegformerImageProcessorPil,
        UperNetConfig,
        UperNetForSemanticSegmentation,
    )

    torch.manual_seed(0)
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    config = UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=32,
                           auxiliary_channels=8, num_labels=num_labels)
    UperNetForSemanticSegmentation(config).save_pretrained(folder)
    SegformerImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def upernet_folder(tmp_path_factory):
    return save_upernet(tmp_path_factory.mktemp("upernet"))


def reference_depth(folder, image):
    """Straight transformers call, independent of the annotator's code path."""
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    model = AutoModelForDepthEstimation.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder, backend="pil")
    with torch.no_grad():
        raw = model(**processor(images=image, return_tensors="pt")).predicted_depth
    raw = torch.nn.functional.interpolate(raw[:, None], size=image.shape[:2], mode="bicubic", align_corners=False)
    return raw[0, 0].numpy()


def test_depth_from_local_folder_is_normalised_white_near(dpt_folder):
    out = annotate("depth", COFFEE, resolution=128, width=600, height=400, model=str(dpt_folder))
    assert out.shape == (400, 600, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:, :, 0], out[:, :, 2]) and out.min() == 0 and out.max() == 255
    detect = annotate("tile_resample", COFFEE)  # unchanged image, to build the detect input by hand
    import cv2

    detect = cv2.resize(detect, (192, 128), interpolation=cv2.INTER_AREA)
    raw = reference_depth(dpt_folder, detect)
    expected = ((raw - raw.min()) / (raw.max() - raw.min()) * 255).astype(np.uint8)
    small = annotate("depth", COFFEE, resolution=128, width=192, height=128, model=dpt_folder)
    assert np.abs(small[:, :, 0].astype(int) - expected).max() <= 1, "larger prediction = nearer = whiter"


def test_metric_depth_models_map_percentiles_near_white(dpt_folder, monkeypatch):
    from controlnet.annotators import depth as depth_module

    size = {"resolution": 64, "width": 96, "height": 64, "model": dpt_folder}  # no output resize
    monkeypatch.setattr(depth_module, "METRIC_MODEL_TYPES", {"dpt"})  # pretend DPT predicted metres
    metric = annotate("depth", COFFEE, **size)[:, :, 0]
    import cv2

    detect = cv2.resize(annotate("tile_resample", COFFEE), (96, 64), interpolation=cv2.INTER_AREA)
    distance = reference_depth(dpt_folder, detect)
    low, high = np.percentile(distance, 2), np.percentile(distance, 85)
    expected = ((1.0 - (distance - low) / (high - low)) * 255).clip(0, 255).astype(np.uint8)
    assert np.abs(metric.astype(int) - expected).max() <= 1, "2nd..85th percentile of distance, near = white"
    assert 0.13 <= (metric == 0).mean() <= 0.17, "the farthest ~15% is black, as in the references"


def test_normal_midas_from_depth_model(dpt_folder):
    out = annotate("normal_midas", COFFEE, resolution=64, model=dpt_folder)
    assert out.shape == (400, 600, 3)
    assert out[:, :, 0].min() >= 127, "R is z, which always points to the viewer"


def test_segmentation_uses_the_ade20k_palette(upernet_folder):
    out = annotate("seg_ade20k", COFFEE, resolution=64, model=upernet_folder)
    assert out.shape == (400, 600, 3)
    palette = {tuple(c) for c in ADE20K_PALETTE}
    assert {tuple(c) for c in np.unique(out.reshape(-1, 3), axis=0)} <= palette
    assert tuple(ADE20K_PALETTE[12]) == (150, 5, 61) and tuple(ADE20K_PALETTE[2]) == (6, 230, 230)


def test_segmentation_rejects_non_ade_models(tmp_path):
    folder = save_upernet(tmp_path / "ten", num_labels=10)
    with pytest.raises(InputError, match="150 ADE20K classes"):
        annotate("seg", COFFEE, resolution=64, model=folder)


def test_missing_and_wrong_model_folders(tmp_path, upernet_folder, dpt_folder):
    with pytest.raises(MissingFileError, match="not found"):
        annotate("depth", COFFEE, model=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingFileError, match="config.json"):
        annotate("depth", COFFEE, model=tmp_path / "empty")
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((dpt_folder / "config.json").read_text())
    with pytest.raises(MissingFileError, match="model.safetensors"):
        annotate("depth", COFFEE, model=no_weights)
    with pytest.raises(InputError, match="does not hold a depth-estimation model"):
        annotate("depth", COFFEE, resolution=64, model=upernet_folder)
    with pytest.raises(MissingFileError, match="depth needs a transformers folder named depth: .*--models-dir.*model="):
        annotate("depth", COFFEE)


@pytest.fixture(scope="module")
def hed_file(tmp_path_factory):
    from controlnet.annotators.hed_network import ControlNetHED

    torch.manual_seed(0)
    net = ControlNetHED()
    path = tmp_path_factory.mktemp("hed") / "ControlNetHED.pth"
    torch.save(net.state_dict(), path)
    return path


def test_hed_from_published_file_layout(hed_file):
    soft = annotate("softedge_hed", COFFEE, resolution=96, model=hed_file.parent)  # folder holding the file
    assert soft.shape == (400, 600, 3) and np.array_equal(soft[:, :, 0], soft[:, :, 1])
    assert np.array_equal(soft, annotate("softedge_hed", COFFEE, resolution=96, model=hed_file))
    safe = annotate("softedge_hed", COFFEE, resolution=96, model=hed_file, safe=True, width=144, height=96)
    assert len(np.unique(safe)) <= 3, "safe quantises to 3 levels"
    scribble = annotate("scribble_hed", COFFEE, resolution=96, model=hed_file)
    assert set(np.unique(scribble)) <= {0, 255}


def test_hed_state_dict_keys_match_the_published_names():
    from controlnet.annotators.hed_network import ControlNetHED

    keys = set(ControlNetHED().state_dict())
    assert {"norm", "block1.convs.0.weight", "block1.projection.weight", "block5.convs.2.bias"} <= keys
    assert len(keys) == 1 + 2 * (2 + 2 + 3 + 3 + 3) + 2 * 5


def test_lineart_is_inverted_network_output(tmp_path):
    from controlnet.annotators.lineart_network import LineartGenerator

    torch.manual_seed(0)
    net = LineartGenerator().eval()
    torch.save(net.state_dict(), tmp_path / "sk_model.pth")
    image = np.ascontiguousarray(COFFEE[:64, :128])  # a multiple of 64: no padding
    out = annotate("lineart", image, resolution=64, model=tmp_path)
    with torch.no_grad():
        line = net(torch.from_numpy(image).float().permute(2, 0, 1)[None] / 255.0)[0, 0].numpy()
    expected = 255 - (line * 255).clip(0, 255).astype(np.uint8)
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1


def test_transformers_and_hed_detectors_run_on_their_networks_device(dpt_folder, upernet_folder, hed_file, tmp_path):
    from controlnet.annotators.lineart_network import LineartGenerator

    torch.save(LineartGenerator().state_dict(), tmp_path / "sk_model.pth")
    for module, model in (("depth", dpt_folder), ("seg_ade20k", upernet_folder), ("softedge_hed", hed_file),
                          ("lineart", tmp_path)):
        assert_runs_on_the_network_device(module, model=model)
