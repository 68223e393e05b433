"""Depth Anything V2 (depth_anything_v2) against the authors' code and transformers' own model.

The reference in data/depth_anything_reference.npz was made once, outside the project, by
data/make_depth_anything_reference.py: comfyui_controlnet_aux's DepthAnythingV2Detector (the authors'
DepthAnythingV2 and infer_image; torch 2.14.1, CPU) loading seeded random weights of a tiny model
(width 64, 12 blocks) saved in the published layout of depth_anything_v2_vits.pth, on three seeded
pictures (data/depth_anything_inputs.py and pidinet_inputs.picture make both again here). The
network sees 518×784, 784×518 and 518×518: two of them interpolate the position embeddings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.annotators import annotate
from detector_device import assert_runs_on_the_network_device

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from depth_anything_inputs import PICTURE_SEEDS, PICTURE_SIZES, random_depth_anything_state  # noqa: E402
from pidinet_inputs import picture  # noqa: E402

REFERENCE = np.load(DATA / "depth_anything_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("depth_anything") / "depth_anything_v2_vits.pth"
    torch.save(random_depth_anything_state(int(REFERENCE["weight_seed"])), path)
    return path


@pytest.fixture(scope="module")
def folder(weights, tmp_path_factory):
    """The same weights as a transformers folder (save_pretrained of the mapped model)."""
    from controlnet.annotators.depth_anything_v2 import load_depth_anything

    path = tmp_path_factory.mktemp("hf") / "Depth-Anything-V2-tiny-hf"
    load_depth_anything(weights).save_pretrained(path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_and_map_equal_the_authors_code(weights, index, case):
    from controlnet.annotators.depth_anything_v2 import depth_anything_raw

    image = picture(*case)
    raw = depth_anything_raw(image, weights)
    expected = REFERENCE[f"raw_{index}"]
    assert raw.shape == case[1] and expected.max() > 1.0 and (expected > 0).mean() > 0.7, "reference is flat"
    assert np.abs(raw - expected).max() <= 1e-5
    out = annotate("depth_anything_v2", image, resolution=min(case[1]), model=weights)
    assert out.shape == (*case[1], 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    assert len(np.unique(REFERENCE[f"map_{index}"])) > 100
    assert np.abs(out[:, :, 0].astype(int) - REFERENCE[f"map_{index}"].astype(int)).max() <= 1


def test_network_equals_transformers_own_model(weights, folder):
    """Where no position embedding is interpolated (a 518×518 input), the mapped file is transformers' model."""
    from transformers import DepthAnythingForDepthEstimation

    from controlnet.annotators.depth_anything_v2 import load_depth_anything

    theirs = DepthAnythingForDepthEstimation.from_pretrained(folder, local_files_only=True).eval()
    x = torch.randn(1, 3, 518, 518, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        expected = theirs(pixel_values=x).predicted_depth
        assert expected.max() > 1.0
        assert torch.abs(load_depth_anything(weights)(pixel_values=x).predicted_depth - expected).max() <= 1e-5


def test_transformers_folder_gives_the_same_map(weights, folder):
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("depth_anything_v2", image, resolution=128, model=folder),
                          annotate("depth_anything_v2", image, resolution=128, model=weights))


@pytest.mark.parametrize("size,expected", [
    ((128, 192), (518, 784)),    # 518 × 1.5 = 777 = 55.5 × 14, rounded to 56 × 14
    ((480, 640), (518, 686)),    # 690.7 → 49 × 14
    ((700, 300), (1204, 518)),   # scale 518/300 (the short side reaches 518); 1208.7 → 86 × 14
    ((1000, 1000), (518, 518)),
    ((518, 530), (518, 532)),    # 530 → 38 × 14
])
def test_network_size_is_the_authors_lower_bound_rule(size, expected):
    from controlnet.annotators.depth_anything_v2 import network_size

    assert network_size(*size) == expected


def test_network_input_is_cubic_resized_and_imagenet_normalised():
    import cv2

    from controlnet.annotators.depth_anything_v2 import network_input

    image = picture(5, (64, 96))
    x = network_input(image)[0].numpy()
    assert x.shape == (3, 518, 784)
    resized = cv2.resize(image.astype(np.float64) / 255.0, (784, 518), interpolation=cv2.INTER_CUBIC)
    red = (resized[:, :, 0] - 0.485) / 0.229
    assert np.abs(x[0] - red).max() < 1e-6


def test_map_is_min_max_truncated_to_uint8():
    from controlnet.annotators.depth import relative_depth_to_gray

    depth = np.array([[0.5, 1.0], [2.5, 1.999]], np.float32)
    assert relative_depth_to_gray(depth).tolist() == [[0, 63], [255, 191]]  # 0.25·255 = 63.75 → 63


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/depth_anything_v2"
    folder.mkdir(parents=True)
    (folder / "depth_anything_v2_vits.pth").write_bytes(weights.read_bytes())
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("depth_anything_v2", image, resolution=128, models_dir=tmp_path),
                          annotate("depth_anything_v2", image, resolution=128, model=weights))


def test_server_offers_it_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "depth_anything_v2" not in offered(tmp_path)
    assert "depth_anything_v2" in offered(weights.parent)


def test_cli_names_the_missing_file_in_one_line(tmp_path, capsys):
    from PIL import Image

    from bad_input_tools import assert_user_error

    Image.fromarray(picture(1, (64, 64))).save(tmp_path / "in.png")
    message = assert_user_error(["annotate", "depth_anything_v2", tmp_path / "in.png", "-o", tmp_path / "out.png",
                                 "--models-dir", tmp_path], capsys, "depth_anything_v2_vits.pth", "depth_anything_v2/",
                                "Apache-2.0", "CC-BY-NC-4.0")
    assert len(message.strip().splitlines()) == 1 and not (tmp_path / "out.png").exists()


def test_cli_refuses_a_bad_file_in_one_line(tmp_path, capsys):
    from PIL import Image

    from bad_input_tools import assert_user_error

    Image.fromarray(picture(1, (64, 64))).save(tmp_path / "in.png")
    torch.save({"pretrained.cls_token": torch.zeros(1, 1, 64)}, tmp_path / "depth_anything_v2_vits.pth")
    assert_user_error(["annotate", "depth_anything_v2", tmp_path / "in.png", "-o", tmp_path / "out.png",
                       "--param", f"model={tmp_path / 'depth_anything_v2_vits.pth'}"], capsys, "not one of the published")


def test_a_folder_holding_the_a1111_vitl_safetensors_is_read(weights, tmp_path):
    """sd-webui-controlnet keeps depth_anything_v2_vitl.safetensors in downloads/depth_anything_v2/."""
    from safetensors.torch import save_file

    folder = tmp_path / "downloads" / "depth_anything_v2"
    folder.mkdir(parents=True)
    save_file(torch.load(weights, weights_only=True), folder / "depth_anything_v2_vitl.safetensors")
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("depth_anything_v2", image, resolution=128, model=tmp_path / "downloads"),
                          annotate("depth_anything_v2", image, resolution=128, model=weights))


def test_a_folder_of_another_model_or_with_missing_tensors_is_refused(folder, tmp_path):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from controlnet.errors import InputError

    other = tmp_path / "dpt"
    shutil.copytree(folder, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "dpt"}))
    with pytest.raises(InputError, match="holds a dpt model, not Depth Anything"):
        annotate("depth_anything_v2", picture(1, (64, 64)), model=other)
    partial = tmp_path / "partial"
    shutil.copytree(folder, partial)
    tensors = load_file(partial / "model.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("head.")}, partial / "model.safetensors")
    with pytest.raises(InputError, match="lacks 6 of the model's tensors"):
        annotate("depth_anything_v2", picture(1, (64, 64)), model=partial)


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("depth_anything_v2", model=weights)


def test_runs_on_its_networks_device_from_a_transformers_folder(folder):
    assert_runs_on_the_network_device("depth_anything_v2", model=folder)
