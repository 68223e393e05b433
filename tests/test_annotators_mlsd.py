"""M-LSD (`mlsd` given mlsd_large_512_fp32.pth) against controlnet_aux 0.0.10's MLSDdetector.

The reference in data/mlsd_reference.npz was made once, outside the project, by
data/make_mlsd_reference.py: controlnet_aux 0.0.10 (torch 2.14.1, CPU) loading seeded random
weights saved as the published plain state dict, on three seeded pictures (data/mlsd_inputs.py
makes both again here), at the image size so that neither side resizes.
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
from mlsd_inputs import PICTURE_SEEDS, PICTURE_SIZES, TINY_SEED, picture, random_mlsd_state  # noqa: E402

REFERENCE = np.load(DATA / "mlsd_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from controlnet.annotators.mlsd_network import MLSDLarge

    path = tmp_path_factory.mktemp("mlsd") / "mlsd_large_512_fp32.pth"
    torch.save(random_mlsd_state(MLSDLarge().state_dict(), int(REFERENCE["weight_seed"])), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_controlnet_aux(weights, index, case):
    from controlnet.annotators.lines import mlsd_raw

    raw = mlsd_raw(picture(*case), weights)[:, ::4, ::4]
    assert np.abs(raw - REFERENCE[f"raw_{index}"]).max() <= 1e-5


@pytest.mark.parametrize("index,case", CASES)
def test_line_map_equals_controlnet_aux(weights, index, case):
    out = annotate("mlsd", picture(*case), resolution=min(case[1]), model=weights.parent,
                   value_threshold=0.1, distance_threshold=0.1)
    expected = REFERENCE[f"mlsd_{index}"]
    assert out.shape == (*case[1], 3) and expected.any()
    assert np.array_equal(out[:, :, 0], expected)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from controlnet.annotators.mlsd_network import MLSDTiny

    path = tmp_path_factory.mktemp("mlsd_tiny") / "mlsd_tiny_512_fp32.pth"
    torch.save(random_mlsd_state(MLSDTiny().state_dict(), TINY_SEED), path)
    return path


@pytest.mark.parametrize("index,case", CASES)
def test_tiny_line_map_equals_controlnet_aux(tiny_weights, index, case):
    out = annotate("mlsd", picture(*case), resolution=min(case[1]), model=tiny_weights)
    expected = REFERENCE[f"mlsd_tiny_{index}"]
    assert expected.any() and np.array_equal(out[:, :, 0], expected)


def test_thresholds_are_the_a1111_sliders(weights):
    image = picture(*CASES[0][1])
    loose = annotate("mlsd", image, resolution=256, model=weights, value_threshold=0.0, distance_threshold=0.0)
    strict = annotate("mlsd", image, resolution=256, model=weights, value_threshold=0.9, distance_threshold=20.0)
    assert (strict > 0).sum() < (loose > 0).sum()


def test_without_weights_the_opencv_stand_in_runs():
    image = picture(*CASES[0][1])
    assert annotate("mlsd", image, resolution=256).shape == (256, 384, 3)


def test_state_dict_names_match_the_published_file():
    from controlnet.annotators.mlsd_network import MLSDLarge

    keys = set(MLSDLarge().state_dict())
    assert {"backbone.features.0.0.weight", "backbone.features.1.conv.0.0.weight", "backbone.features.13.conv.3.bias",
            "block15.conv1.0.weight", "block16.conv2.1.running_var", "block23.conv3.bias"} <= keys


def test_server_passes_the_file_in_its_annotator_dir(weights, tmp_path):
    from controlnet.web.modules import weights_path

    assert weights_path("mlsd", tmp_path) is None
    assert weights_path("mlsd", weights.parent) == weights


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("mlsd", model=weights)


def test_runs_on_its_networks_device_tiny(tiny_weights):
    assert_runs_on_the_network_device("mlsd", model=tiny_weights)


def test_batch_norms_are_folded_into_the_convolutions_with_the_same_function():
    from torch import nn

    from controlnet.annotators.leres_network import BatchStatNorm
    from controlnet.annotators.local_models import folded_batch_norms

    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()),
                        nn.Sequential(nn.Conv2d(8, 8, 1, bias=False), BatchStatNorm(8)))
    for norm in (net[0][1], net[1][1]):
        norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 2)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = net.eval()(x)
        folded = folded_batch_norms(net)
        assert isinstance(folded[0][1], nn.Identity) and isinstance(folded[1][1], BatchStatNorm)
        torch.testing.assert_close(folded(x), expected, rtol=1e-5, atol=1e-5)


def test_loaded_networks_have_their_batch_norms_folded(weights, tiny_weights):
    from controlnet.annotators.lines import _build_large, _build_tiny
    from controlnet.annotators.local_models import load_network

    for path, build in ((weights, _build_large), (tiny_weights, _build_tiny)):
        net = load_network(path, path.name, "M-LSD", build, fold_batch_norms=True)
        assert not any(type(m) is torch.nn.BatchNorm2d for m in net.modules())
