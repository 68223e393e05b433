"""TEED (softedge_teed) against controlnet_aux 0.0.10.

The reference maps in data/teed_reference.npz were made once, outside the project, by
data/make_teed_reference.py: controlnet_aux 0.0.10's TEEDdetector (torch 2.14.1, CPU) loading
seeded random weights saved in the published 7_model.pth layout (a plain state dict), on three
seeded pictures (data/teed_inputs.py and pidinet_inputs.picture make both again here). Sizes are
multiples of 64, so neither side resizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.annotators import annotate
from controlnet.errors import InputError
from detector_device import assert_runs_on_the_network_device

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from pidinet_inputs import picture  # noqa: E402
from teed_inputs import PICTURE_SEEDS, PICTURE_SIZES, random_teed_state  # noqa: E402

REFERENCE = np.load(DATA / "teed_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights in the published layout of 7_model.pth: a plain state dict."""
    from controlnet.annotators.teed_network import TEED

    shapes = {k: tuple(v.shape) for k, v in TEED().state_dict().items()}
    path = tmp_path_factory.mktemp("teed") / "7_model.pth"
    torch.save(random_teed_state(shapes, int(REFERENCE["weight_seed"])), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_controlnet_aux(weights, index, case):
    from controlnet.annotators.teed import teed_raw

    raw = teed_raw(picture(*case), weights)
    assert raw.shape == case[1]
    assert np.abs(raw - REFERENCE[f"raw_{index}"]).max() <= 1e-5


@pytest.mark.parametrize("safe_steps,key", [(2, "softedge_teed"), (0, "soft")])
@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_controlnet_aux(weights, safe_steps, key, index, case):
    out = annotate("softedge_teed", picture(*case), resolution=min(case[1]), model=weights.parent, safe_steps=safe_steps)
    assert out.shape == (*case[1], 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    expected = REFERENCE[f"{key}_{index}"]
    assert len(np.unique(expected)) == 3 if safe_steps == 2 else len(np.unique(expected)) > 100, "reference is flat"
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_input_not_a_multiple_of_64_is_padded_and_cropped_back(weights):
    image = picture(9, (100, 150))
    out = annotate("softedge_teed", image, resolution=100, model=weights, safe_steps=0)
    assert out.shape == (100, 150, 3)


def test_state_dict_names_match_the_published_file():
    from controlnet.annotators.teed_network import TEED

    keys = set(TEED().state_dict())
    assert {"block_1.conv1.weight", "block_2.conv2.bias", "dblock_3.denselayer1.conv2.weight", "side_1.conv.weight",
            "pre_dense_3.conv.bias", "up_block_1.features.2.weight", "up_block_3.features.5.weight",
            "block_cat.DWconv1.weight", "block_cat.DWconv2.bias"} <= keys
    assert sum(v.numel() for v in TEED().state_dict().values()) == 58910


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/TEED"
    folder.mkdir(parents=True)
    (folder / "7_model.pth").write_bytes(weights.read_bytes())
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("softedge_teed", image, resolution=128, models_dir=tmp_path),
                          annotate("softedge_teed", image, resolution=128, model=weights))


def test_bad_safe_steps_is_refused(weights):
    with pytest.raises(InputError, match="safe_steps"):
        annotate("softedge_teed", picture(1, (64, 64)), model=weights, safe_steps=-1)


def test_server_offers_teed_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "softedge_teed" not in offered(tmp_path)
    assert "softedge_teed" in offered(weights.parent)


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("softedge_teed", model=weights)
