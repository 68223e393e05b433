"""Anyline (anyline, MTEED.pth) against controlnet_aux 0.0.10.

The reference maps in data/anyline_reference.npz were made once, outside the project, by
data/make_anyline_reference.py: controlnet_aux 0.0.10's AnylineDetector (torch 2.14.1, CPU)
loading seeded random TEED weights saved in the published MTEED.pth layout (a plain state dict), on
three seeded pictures (data/anyline_inputs.py, teed_inputs.random_teed_state and
pidinet_inputs.picture make both again here). Sizes are multiples of 64, so neither side resizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.annotators import annotate
from controlnet.errors import InputError, MissingFileError
from detector_device import assert_runs_on_the_network_device

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from anyline_inputs import PICTURE_SEEDS, PICTURE_SIZES, RAW_STRIDE  # noqa: E402
from pidinet_inputs import picture  # noqa: E402
from teed_inputs import random_teed_state  # noqa: E402

REFERENCE = np.load(DATA / "anyline_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights in the published layout of MTEED.pth: TEED's plain state dict."""
    from controlnet.annotators.teed_network import TEED

    shapes = {k: tuple(v.shape) for k, v in TEED().state_dict().items()}
    path = tmp_path_factory.mktemp("anyline") / "MTEED.pth"
    torch.save(random_teed_state(shapes, int(REFERENCE["weight_seed"])), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)
    assert int(REFERENCE["raw_stride"]) == RAW_STRIDE


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_controlnet_aux(weights, index, case):
    from controlnet.annotators.teed import teed_raw

    raw = teed_raw(picture(*case), weights, "MTEED.pth")
    assert raw.shape == case[1]
    assert np.abs(raw[::RAW_STRIDE, ::RAW_STRIDE] - REFERENCE[f"raw_{index}"]).max() <= 1e-5


@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_controlnet_aux(weights, index, case):
    out = annotate("anyline", picture(*case), resolution=min(case[1]), model=weights.parent)
    assert out.shape == (*case[1], 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    expected = REFERENCE[f"anyline_{index}"]
    assert len(np.unique(expected)) > 20, "reference has no line detail over the 3 TEED levels"
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_specks_of_12_pixels_or_fewer_are_dropped_4_connected():
    from controlnet.annotators.anyline import drop_specks

    lines = np.zeros((20, 20), np.uint8)
    lines[0, :12] = 50                       # 12 pixels: dropped (as scikit-image 0.26 under controlnet_aux)
    lines[5, :13] = 60                       # 13 pixels: kept
    lines[10, :8] = 70                       # 8 + 8 touching only at a corner: two specks (not one of 16), dropped
    lines[11, 8:16] = 70
    out = drop_specks(lines)
    assert not out[0].any() and np.array_equal(out[5], lines[5]) and not out[10:].any()


def test_blend_wraps_as_the_reference_uint8_arithmetic():
    from controlnet.annotators.anyline import screen_uint8

    edge = np.array([0, 127, 255, 255, 127], np.uint8)
    line = np.array([9, 0, 100, 0, 2], np.uint8)
    # no line: the edge; a line over black: the line; over white: 2·line − 1; over 127: (2 + 127 − 254) mod 256
    assert screen_uint8(edge, line).tolist() == [9, 127, 199, 255, 131]


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/TEED"
    folder.mkdir(parents=True)
    (folder / "MTEED.pth").write_bytes(weights.read_bytes())
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("anyline", image, resolution=128, models_dir=tmp_path),
                          annotate("anyline", image, resolution=128, model=weights))


def test_teeds_own_file_name_is_not_taken_for_mteed(weights, tmp_path):
    (tmp_path / "7_model.pth").write_bytes(weights.read_bytes())
    with pytest.raises(MissingFileError, match="MTEED"):
        annotate("anyline", picture(1, (64, 64)), model=tmp_path)


def test_bad_sigma_is_refused(weights):
    with pytest.raises(InputError, match="gaussian_sigma"):
        annotate("anyline", picture(1, (64, 64)), model=weights, gaussian_sigma=0)


def test_server_offers_anyline_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "anyline" not in offered(tmp_path)
    assert "anyline" in offered(weights.parent)


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("anyline", model=weights)
