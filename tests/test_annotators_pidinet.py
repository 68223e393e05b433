"""PiDiNet (softedge_pidinet, softedge_pidisafe, scribble_pidinet) against controlnet_aux 0.0.10.

The reference maps in data/pidinet_reference.npz were made once, outside the project, by
data/make_pidinet_reference.py: controlnet_aux 0.0.10's PidiNetDetector (torch 2.14.1, CPU) loading
seeded random weights saved in the published table5_pidinet.pth layout, on three seeded pictures
(data/pidinet_inputs.py makes both again here). Sizes are multiples of 64, so neither side resizes.
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
from pidinet_inputs import PICTURE_SEEDS, PICTURE_SIZES, picture, published_layout, random_pidinet_state  # noqa: E402

REFERENCE = np.load(DATA / "pidinet_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights in the published layout: {"state_dict": {"module.<name>": tensor}}."""
    from controlnet.annotators.pidinet_network import PiDiNet

    shapes = {k: tuple(v.shape) for k, v in PiDiNet().state_dict().items()}
    path = tmp_path_factory.mktemp("pidinet") / "table5_pidinet.pth"
    torch.save(published_layout(random_pidinet_state(shapes, int(REFERENCE["weight_seed"]))), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_controlnet_aux(weights, index, case):
    from controlnet.annotators.pidinet import pidinet_raw

    raw = pidinet_raw(picture(*case), weights)
    assert np.abs(raw - REFERENCE[f"raw_{index}"]).max() <= 1e-5


@pytest.mark.parametrize("module", ["softedge_pidinet", "softedge_pidisafe", "scribble_pidinet"])
@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_controlnet_aux(weights, module, index, case):
    image = picture(*case)
    out = annotate(module, image, resolution=min(case[1]), model=weights.parent)  # the folder holding the file
    assert out.shape == (*case[1], 3) and np.array_equal(out[:, :, 0], out[:, :, 2])
    expected = REFERENCE[f"{module}_{index}"]
    assert len(np.unique(expected)) > 2 if module == "softedge_pidinet" else True, "reference is not flat"
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


def test_safe_parameter_is_softedge_pidisafe(weights):
    image = picture(*CASES[0][1])
    assert np.array_equal(annotate("softedge_pidinet", image, resolution=128, model=weights, safe=True),
                          annotate("softedge_pidisafe", image, resolution=128, model=weights))


def test_state_dict_names_match_the_published_file():
    from controlnet.annotators.pidinet_network import PiDiNet

    keys = set(PiDiNet().state_dict())
    assert {"init_block.weight", "block1_1.conv1.weight", "block2_1.shortcut.bias", "block4_4.conv2.weight",
            "dilations.3.conv2_4.weight", "attentions.0.conv1.bias", "conv_reduces.2.conv.weight",
            "classifier.bias"} <= keys
    assert sum(v.numel() for v in PiDiNet().state_dict().values()) == 710149


def test_server_offers_pidinet_modules_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    names = {"softedge_pidinet", "softedge_pidisafe", "scribble_pidinet"}
    assert not names & set(offered(tmp_path))
    assert names <= set(offered(weights.parent))


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("softedge_pidinet", model=weights)
