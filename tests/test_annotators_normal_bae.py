"""NormalBAE (normal_bae) against controlnet_aux 0.0.10.

The reference outputs in data/normal_bae_reference.npz were made once, outside the project, by
data/make_normal_bae_reference.py: controlnet_aux 0.0.10's NormalBaeDetector (torch 2.14.1, CPU)
loading seeded random weights for its full-size network (its classes take no smaller width or
depth) saved in the published scannet.pt layout ({"model": {"module.<name>": tensor}}), on three
seeded pictures (data/normal_bae_inputs.py and pidinet_inputs.picture make both again here). Sizes
are multiples of 64, so neither side resizes or pads.
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
from normal_bae_inputs import PICTURE_SEEDS, PICTURE_SIZES, published_layout, random_normal_bae_state  # noqa: E402
from pidinet_inputs import picture  # noqa: E402

REFERENCE = np.load(DATA / "normal_bae_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights (72.6 M values) in the published layout of scannet.pt."""
    from controlnet.annotators.local_models import build_uninitialised
    from controlnet.annotators.normal_bae_network import NormalBae

    shapes = {k: tuple(v.shape) for k, v in build_uninitialised(NormalBae).state_dict().items()}
    path = tmp_path_factory.mktemp("normal_bae") / "scannet.pt"
    torch.save(published_layout(random_normal_bae_state(shapes, int(REFERENCE["weight_seed"]))), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_normals_equal_controlnet_aux(weights, index, case):
    from controlnet.annotators.normal_bae import normal_bae_raw

    raw = normal_bae_raw(picture(*case), weights)
    assert raw.shape == (3, *case[1])
    assert np.abs(raw - REFERENCE[f"raw_{index}"]).max() <= 1e-5


@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_controlnet_aux(weights, index, case):
    out = annotate("normal_bae", picture(*case), resolution=min(case[1]), model=weights.parent)
    expected = REFERENCE[f"normal_bae_{index}"]
    assert out.shape == expected.shape == (*case[1], 3)
    assert all(len(np.unique(expected[:, :, c])) > 5 for c in range(3)), "reference is flat"
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_colour_mapping_is_the_references():
    from controlnet.annotators.normal_bae import normals_to_colour

    normals = np.array([[[-1.0, 0.0, 1.0, 0.999]], [[0.0, -2.0, 0.5, -0.999]], [[1.0, 1.0, -0.5, 0.0]]], np.float32)
    colour = normals_to_colour(normals)
    assert colour.shape == (1, 4, 3)
    assert colour[0].tolist() == [[0, 127, 255], [127, 0, 255], [255, 191, 63], [254, 0, 127]]


def test_input_not_a_multiple_of_64_is_padded_and_cropped_back(weights):
    out = annotate("normal_bae", picture(9, (70, 100)), resolution=70, model=weights)
    assert out.shape == (70, 100, 3)


def test_state_dict_names_match_the_published_file():
    from controlnet.annotators.local_models import build_uninitialised
    from controlnet.annotators.normal_bae_network import NormalBae

    state = build_uninitialised(NormalBae).state_dict()
    assert tuple(state["encoder.original_model.blocks.1.0.se.conv_reduce.weight"].shape) == (6, 144, 1, 1)
    assert tuple(state["encoder.original_model.blocks.6.2.conv_pwl.weight"].shape) == (512, 3072, 1, 1)
    assert tuple(state["decoder.out_conv_res4.0.weight"].shape) == (128, 516, 1)
    assert {"encoder.original_model.bn2.running_var", "decoder.up4._net.4.num_batches_tracked"} <= set(state)
    assert len(state) == 936 and sum(v.numel() for v in state.values()) == 72602876


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/normal_bae"
    folder.mkdir(parents=True)
    (folder / "scannet.pt").symlink_to(weights)
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("normal_bae", image, resolution=64, models_dir=tmp_path),
                          annotate("normal_bae", image, resolution=64, model=weights))


def test_server_offers_normal_bae_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "normal_bae" not in offered(tmp_path)
    assert "normal_bae" in offered(weights.parent)


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("normal_bae", model=weights)
