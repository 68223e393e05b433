"""MiDaS DPT-Hybrid (depth_midas, normal_midas) from the original file layout, against controlnet_aux 0.0.10.

The reference outputs in data/midas_reference.npz were made once, outside the project, by
data/make_midas_reference.py: controlnet_aux 0.0.10's MidasDetector (torch 2.14.1, timm 1.0.31, CPU)
loading seeded random weights saved in the layout of dpt_hybrid-midas-501f0c75.pt (a plain state
dict), on three seeded pictures (data/midas_inputs.py and pidinet_inputs.picture make both again
here). The real network has 123 M parameters, so that script builds controlnet_aux's DPT-Hybrid
REDUCED (narrower and shallower, by monkeypatching its encoder builder, see there) and stores its
parameter names and shapes, from which the test makes the same file. Sizes are multiples of 64, so
neither side resizes.
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
from midas_inputs import BG_THRESHOLD, PICTURE_SEEDS, PICTURE_SIZES, random_midas_state  # noqa: E402
from pidinet_inputs import picture  # noqa: E402

REFERENCE = np.load(DATA / "midas_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))
FILE = "dpt_hybrid-midas-501f0c75.pt"


def stored_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    names, shapes = REFERENCE[f"{kind}_names"], REFERENCE[f"{kind}_shapes"]
    return {str(n): tuple(int(d) for d in str(s).split(",")) for n, s in zip(names, shapes)}


def reference_state() -> dict[str, torch.Tensor]:
    return random_midas_state(stored_shapes("state"), int(REFERENCE["weight_seed"]))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights of the reduced DPT-Hybrid in the published layout: a plain state dict."""
    path = tmp_path_factory.mktemp("midas") / FILE
    torch.save(reference_state(), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)
    assert float(REFERENCE["bg_threshold"]) == BG_THRESHOLD


@pytest.mark.parametrize("index,case", CASES)
def test_raw_output_equals_controlnet_aux(weights, index, case):
    from controlnet.annotators.midas import midas_padded

    raw, size = midas_padded(picture(*case), weights)
    assert raw.shape == size == case[1]
    expected = REFERENCE[f"raw_{index}"]
    assert expected.max() > 1.0 and 0.05 < (expected == 0).mean() < 0.2, "reference is flat or mostly clipped"
    assert np.abs(raw - expected).max() <= 1e-5


@pytest.mark.parametrize("index,case", CASES)
def test_depth_and_normal_maps_equal_controlnet_aux(weights, index, case):
    image, resolution = picture(*case), min(case[1])
    depth = annotate("depth_midas", image, resolution=resolution, model=weights)
    normal = annotate("normal_midas", image, resolution=resolution, model=weights.parent, bg_threshold=BG_THRESHOLD)
    assert depth.shape == normal.shape == (*case[1], 3) and np.array_equal(depth[:, :, 0], depth[:, :, 2])
    expected_depth, expected_normal = REFERENCE[f"depth_{index}"], REFERENCE[f"normal_{index}"]
    assert len(np.unique(expected_depth)) > 200 and (expected_normal[:, :, 2] != 127).mean() > 0.1, "reference is flat"
    assert np.abs(depth[:, :, 0].astype(int) - expected_depth.astype(int)).max() <= 1
    assert np.abs(normal.astype(int) - expected_normal.astype(int)).max() <= 1


def test_config_is_read_off_the_tensors():
    from controlnet.annotators.midas_network import hybrid_config

    config = hybrid_config(reference_state())
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (128, 6, 2, 512)
    assert list(config.backbone_out_indices) == [0, 1, 2, 5], "the last block and the one three before (real: 8, 11)"
    assert list(config.backbone_config.depths) == [1, 1, 2] and list(config.backbone_config.hidden_sizes) == [128, 256, 512]
    assert list(config.neck_hidden_sizes) == [128, 256, 96, 96] and config.fusion_hidden_size == 64
    assert config.image_size == 384 and config.layer_norm_eps == 1e-6


def test_the_published_layout_maps_whole_onto_transformers_dpt_hybrid():
    """The real file's 368 tensor names and shapes (controlnet_aux's DPTDepthModel at full size, stored by the
    reference script): every one lands in the model, whose config is Intel/dpt-hybrid-midas's."""
    from controlnet.annotators.local_models import load_strictly
    from controlnet.annotators.midas_network import build_dpt_hybrid

    state = {name: torch.empty(shape, device="meta") for name, shape in stored_shapes("published").items()}
    model, renamed = build_dpt_hybrid(state, "MiDaS", "published")
    load_strictly(model, renamed, "published", "MiDaS", assign=True)  # raises on any missing, extra or resized tensor
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)
    assert list(config.backbone_out_indices[2:]) == [8, 11] and list(config.backbone_config.depths) == [3, 4, 9]
    assert list(config.neck_hidden_sizes) == [256, 512, 768, 768] and list(config.backbone_featmap_shape) == [1, 1024, 24, 24]
    assert len(state) == 368 and len(renamed) == len(state) - 2 + 12 * 2 * 2, "head dropped, qkv weight and bias split in three"


def test_input_not_a_multiple_of_64_is_padded_and_cropped_back(weights):
    from controlnet.annotators.midas import midas_padded

    image = picture(9, (100, 150))
    raw, size = midas_padded(image, weights)
    assert raw.shape == (128, 192) and size == (100, 150)
    out = annotate("depth_midas", image, resolution=100, model=weights)
    assert out.shape == (100, 150, 3)
    assert annotate("normal_midas", image, resolution=100, model=weights).shape == (100, 150, 3)


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/midas"
    folder.mkdir(parents=True)
    (folder / FILE).write_bytes(weights.read_bytes())
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("depth_midas", image, resolution=128, models_dir=tmp_path),
                          annotate("depth_midas", image, resolution=128, model=weights))


@pytest.mark.parametrize("change", ["drop", "extra", "reshape"])
def test_file_that_only_partly_matches_is_refused(tmp_path, change):
    """Never run with partly random weights: a missing, an extra or a resized tensor is named."""
    state = reference_state()
    if change == "drop":
        del state["scratch.refinenet2.out_conv.bias"]
    elif change == "extra":
        state["scratch.refinenet5.out_conv.bias"] = torch.zeros(64)
    else:
        state["scratch.layer3_rn.weight"] = torch.zeros(64, 97, 3, 3)
    path = tmp_path / FILE
    torch.save(state, path)
    words = {"drop": r"missing 1 keys \(neck\.fusion_stage\.layers\.2\.projection\.bias\)", "extra": "unexpected 1 .*refinenet5", "reshape": "size mismatch"}[change]
    with pytest.raises(InputError, match=f"not a MiDaS DPT-Hybrid.*{words}"):
        annotate("depth_midas", picture(1, (64, 64)), model=path)


def test_server_offers_midas_only_with_the_file(weights, tmp_path):
    from controlnet.web.modules import offered

    assert not {"depth_midas", "normal_midas"} & set(offered(tmp_path))
    assert {"depth_midas", "normal_midas"} <= set(offered(weights.parent))


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("depth_midas", model=weights)
