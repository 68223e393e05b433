"""Manga line (lineart_anime_denoise, erika.pth) against the original network run as sd-webui-controlnet runs it.

controlnet_aux 0.0.10 has no manga line detector. The reference maps in
data/manga_line_reference.npz were made once, outside the project, by
data/make_manga_line_reference.py: `res_skip` of ljsabc/MangaLineExtraction_PyTorch (the network
sd-webui-controlnet copies; torch 2.14.1, CPU) loading seeded random weights saved in the
published erika.pth layout, with the steps of the extension's MangaLineExtration.__call__, on
three seeded pictures (data/manga_line_inputs.py and pidinet_inputs.picture make both again here).
Sizes are multiples of 64, so nothing is padded.
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
from manga_line_inputs import PICTURE_SEEDS, PICTURE_SIZES, RAW_STRIDE, random_manga_line_state  # noqa: E402
from pidinet_inputs import picture  # noqa: E402

REFERENCE = np.load(DATA / "manga_line_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


def network_shapes() -> dict[str, tuple[int, ...]]:
    from controlnet.annotators.manga_line_network import MangaLineNetwork

    with torch.device("meta"):  # shapes only: no initialisation
        return {k: tuple(v.shape) for k, v in MangaLineNetwork().state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights in the published layout of erika.pth: a plain state dict (172 MB)."""
    path = tmp_path_factory.mktemp("manga_line") / "erika.pth"
    torch.save(random_manga_line_state(network_shapes(), int(REFERENCE["weight_seed"])), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)
    assert int(REFERENCE["raw_stride"]) == RAW_STRIDE


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_the_original(weights, index, case):
    from controlnet.annotators.manga_line import manga_line_raw

    raw = manga_line_raw(picture(*case), weights)
    assert raw.shape == case[1]
    expected = REFERENCE[f"raw_{index}"]
    assert expected.std() > 10, "reference output is flat"
    # the output is on the pixel scale 0..255: 1e-5 of that range (float32 spacing at 128 is 1.5e-5)
    assert np.abs(raw[::RAW_STRIDE, ::RAW_STRIDE] - expected).max() <= 1e-5 * 255


@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_the_original(weights, index, case):
    out = annotate("lineart_anime_denoise", picture(*case), resolution=min(case[1]), model=weights.parent)
    assert out.shape == (*case[1], 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    expected = REFERENCE[f"lineart_anime_denoise_{index}"]
    assert len(np.unique(expected)) > 100, "reference is flat"
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_input_not_a_multiple_of_64_is_padded_and_cropped_back(weights):
    image = picture(9, (50, 70))
    out = annotate("manga_line", image, resolution=50, model=weights)
    assert out.shape == (50, 70, 3)
    padded = np.pad(image, [(0, 14), (0, 58), (0, 0)], mode="edge")  # as A1111: edge-padded to 64
    assert np.array_equal(out, annotate("manga_line", padded, resolution=64, model=weights)[:50, :70])


def test_state_dict_names_match_the_published_file():
    shapes = network_shapes()
    assert {"block0.model.0.conv1.model.0.running_var", "block0.model.0.shortcut.model.0.weight",
            "block4.model.11.shortcut.model.0.weight", "block5.model.0.conv1.model.2.weight",
            "block5.model.0.shortcut.model.0.bias", "block9.model.1.residual.model.2.bias",
            "conv15.model.0.num_batches_tracked", "conv15.model.2.weight"} <= set(shapes)
    # the skips between encoder and decoder add without a projection: no tensors
    assert len(shapes) == 707 and not any(k.startswith(("res1.", "res4.")) for k in shapes)


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "annotator/downloads/manga_line"
    folder.mkdir(parents=True)
    (folder / "erika.pth").symlink_to(weights)
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("lineart_anime_denoise", image, resolution=64, models_dir=tmp_path),
                          annotate("lineart_anime_denoise", image, resolution=64, model=weights))


def test_server_offers_manga_line_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "lineart_anime_denoise" not in offered(tmp_path)
    assert "lineart_anime_denoise" in offered(weights.parent)


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("manga_line", model=weights)
