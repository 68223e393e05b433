"""Anime line art (lineart_anime, netG.pth) against controlnet_aux 0.0.10.

The reference maps in data/lineart_anime_reference.npz were made once, outside the project, by
data/make_lineart_anime_reference.py: controlnet_aux 0.0.10's LineartAnimeDetector (torch 2.14.1,
CPU) loading seeded random weights saved in the published netG.pth layout ("module." prefixes), on
three seeded pictures (data/lineart_anime_inputs.py and pidinet_inputs.picture make both again
here). Sizes are multiples of 64, so neither side resizes before stretching to 256×256.
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
from lineart_anime_inputs import (  # noqa: E402
    PICTURE_SEEDS,
    PICTURE_SIZES,
    RAW_STRIDE,
    published_layout,
    random_lineart_anime_state,
)
from pidinet_inputs import picture  # noqa: E402

REFERENCE = np.load(DATA / "lineart_anime_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights in the published layout of netG.pth (218 MB, made once per module)."""
    from controlnet.annotators.lineart_anime_network import AnimeLineartGenerator

    with torch.device("meta"):  # shapes only: no 54M-parameter initialisation
        shapes = {k: tuple(v.shape) for k, v in AnimeLineartGenerator().state_dict().items()}
    path = tmp_path_factory.mktemp("lineart_anime") / "netG.pth"
    torch.save(published_layout(random_lineart_anime_state(shapes, int(REFERENCE["weight_seed"]))), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)
    assert int(REFERENCE["raw_stride"]) == RAW_STRIDE


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_controlnet_aux(weights, index, case):
    from controlnet.annotators.lineart_anime import lineart_anime_raw

    raw = lineart_anime_raw(picture(*case), weights)
    assert raw.shape == (256, 256)
    expected = REFERENCE[f"raw_{index}"]
    assert expected.std() > 0.1, "reference output is flat"
    assert np.abs(raw[::RAW_STRIDE, ::RAW_STRIDE] - expected).max() <= 1e-5


@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_controlnet_aux(weights, index, case):
    out = annotate("lineart_anime", picture(*case), resolution=min(case[1]), model=weights.parent)
    assert out.shape == (*case[1], 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    expected = REFERENCE[f"lineart_anime_{index}"]
    assert len(np.unique(expected)) > 100, "reference is flat"
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_network_sizes_round_up_to_256():
    from controlnet.annotators.lineart_anime import network_size

    assert network_size(64, 256) == (256, 256)
    assert network_size(320, 513) == (512, 768)


def test_input_not_a_multiple_of_64_is_padded_and_cropped_back(weights):
    from controlnet.annotators.lineart_anime import lineart_anime

    image = picture(9, (100, 150))
    out = annotate("lineart_anime", image, resolution=100, model=weights)
    assert out.shape == (100, 150, 3)
    # as A1111: edge-padded to 128×192 before the stretch to 256×256, so the map is the padded one's top-left
    padded = np.pad(image, [(0, 28), (0, 42), (0, 0)], mode="edge")
    assert np.array_equal(out, lineart_anime(padded, str(weights))[:100, :150])


def test_state_dict_names_match_the_published_file():
    from controlnet.annotators.lineart_anime_network import AnimeLineartGenerator

    with torch.device("meta"):
        state = AnimeLineartGenerator().state_dict()
    assert {"model.model.0.weight", "model.model.3.bias", "model.model.1.model.1.weight",
            "model.model.1.model.5.weight", "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.1.weight",
            "model.model.1.model.3.model.3.model.3.model.3.model.3.model.3.model.3.weight"} <= set(state)
    assert len(state) == 32 and sum(v.numel() for v in state.values()) == 54_405_505


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "annotator/downloads/lineart_anime"
    folder.mkdir(parents=True)
    (folder / "netG.pth").symlink_to(weights)
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("lineart_anime", image, resolution=128, models_dir=tmp_path),
                          annotate("lineart_anime", image, resolution=128, model=weights))


def test_server_offers_lineart_anime_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "lineart_anime" not in offered(tmp_path)
    assert "lineart_anime" in offered(weights.parent)


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("lineart_anime", model=weights)
