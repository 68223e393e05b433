"""ZoeDepth (depth_zoe) from the original ZoeD_M12_N.pt layout, against controlnet_aux 0.0.10.

The reference outputs in data/zoe_depth_reference.npz were made once, outside the project, by
data/make_zoe_depth_reference.py: controlnet_aux 0.0.10's ZoeDetector (torch 2.14.1, timm 1.0.31, CPU)
with seeded random weights in the layout of ZoeD_M12_N.pt, on three seeded pictures (data/zoe_inputs.py
and pidinet_inputs.picture make both again here). The real network has 345 M parameters, so that script
builds controlnet_aux's ZoeDepth REDUCED (BEiT of width 64 and 2 heads, narrower neck, see there) and
stores its parameter names and shapes, from which the test makes the same file ({"model": state}, as
published). Sizes are multiples of 64, so neither side resizes to the detect resolution; the network's
own padding, 384x512 resize and flip averaging run on both sides.
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
from zoe_inputs import PICTURE_SEEDS, PICTURE_SIZES, random_zoe_state  # noqa: E402

REFERENCE = np.load(DATA / "zoe_depth_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))
FILE = "ZoeD_M12_N.pt"


def stored_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    names, shapes = REFERENCE[f"{kind}_names"], REFERENCE[f"{kind}_shapes"]
    return {str(n): tuple(int(d) for d in str(s).split(",")) for n, s in zip(names, shapes)}


def reference_state() -> dict[str, torch.Tensor]:
    return random_zoe_state(stored_shapes("state"), int(REFERENCE["weight_seed"]))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights of the reduced ZoeDepth in the published layout: {"model": state dict}."""
    path = tmp_path_factory.mktemp("zoe") / FILE
    torch.save({"model": reference_state()}, path)
    from controlnet.annotators.local_models import load_converted_network
    from controlnet.annotators.zoe import WEIGHTS, WHAT, _convert

    load_converted_network(path, WEIGHTS, WHAT, _convert)  # loaded once here (cached), so each test times its run
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_distance_and_map_equal_controlnet_aux(weights, index, case):
    from controlnet.annotators.zoe import zoe_distance

    image = picture(*case)
    raw = zoe_distance(image, weights)
    expected = REFERENCE[f"raw_{index}"]
    assert raw.shape == expected.shape == case[1]
    assert expected.std() > 1e-3, "reference is flat"
    assert np.abs(raw - expected).max() <= 1e-5
    depth = annotate("depth_zoe", image, resolution=min(case[1]), model=weights)
    assert depth.shape == (*case[1], 3) and np.array_equal(depth[:, :, 0], depth[:, :, 2])
    expected_depth = REFERENCE[f"depth_{index}"]
    assert len(np.unique(expected_depth)) > 200, "reference map is flat"
    assert np.abs(depth[:, :, 0].astype(int) - expected_depth.astype(int)).max() <= 1


def test_network_size_is_zoes_minimal_resize():
    from controlnet.annotators.zoe import network_size

    assert network_size(384, 512) == (384, 512)
    assert network_size(176, 250) == (352, 512), "width's scale 2.048 is nearer 1 than height's 2.18"
    assert network_size(250, 176) == (384, 256), "height's scale 1.536 is nearer 1 than width's 2.9"


def test_config_is_read_off_the_tensors():
    from controlnet.annotators.zoe_network import zoe_config

    config = zoe_config(reference_state())
    beit = config.backbone_config
    assert (beit.hidden_size, beit.num_hidden_layers, beit.num_attention_heads, beit.intermediate_size) == (64, 24, 2, 256)
    assert list(beit.out_indices) == [6, 12, 18, 24] and beit.image_size == 384 and beit.layer_norm_eps == 1e-6
    assert list(config.neck_hidden_sizes) == [24, 32, 48, 64] and config.fusion_hidden_size == 32
    assert list(config.num_attractors) == [16, 8, 4, 1] and config.bin_configurations[0]["n_bins"] == 64


def test_the_published_layout_maps_whole_onto_transformers_zoedepth():
    """The real file's tensor names and shapes (controlnet_aux's ZoeDepth at full size, stored by the reference
    script): every one lands in the model, whose config is Intel/zoedepth-nyu's."""
    from controlnet.annotators.local_models import load_strictly
    from controlnet.annotators.zoe_network import build_zoe

    state = {name: torch.empty(shape, device="meta") for name, shape in stored_shapes("published").items()}
    model, renamed = build_zoe(state, "ZoeDepth", "published")
    load_strictly(model, renamed, "published", "ZoeDepth", assign=True)  # raises on any missing, extra or resized tensor
    beit = model.config.backbone_config
    assert (beit.hidden_size, beit.num_hidden_layers, beit.num_attention_heads) == (1024, 24, 16)
    assert list(model.config.neck_hidden_sizes) == [256, 512, 1024, 1024] and model.config.fusion_hidden_size == 256


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/zoedepth"
    folder.mkdir(parents=True)
    (folder / FILE).write_bytes(weights.read_bytes())
    index, case = CASES[2]
    out = annotate("depth_zoe", picture(*case), resolution=min(case[1]), models_dir=tmp_path)
    assert np.abs(out[:, :, 0].astype(int) - REFERENCE[f"depth_{index}"].astype(int)).max() <= 1


@pytest.mark.parametrize("change", ["drop", "extra", "reshape"])
def test_file_that_only_partly_matches_is_refused(tmp_path, change):
    """Never run with partly random weights (controlnet_aux retries such a file non-strictly)."""
    state = reference_state()
    if change == "drop":
        del state["attractors.2._net.0.bias"]
    elif change == "extra":
        state["core.core.scratch.refinenet5.out_conv.bias"] = torch.zeros(32)
    else:
        state["core.core.scratch.layer3_rn.weight"] = torch.zeros(32, 47, 3, 3)
    path = tmp_path / FILE
    torch.save({"model": state}, path)
    words = {"drop": r"missing 1 keys \(metric_head\.attractors\.2\.conv1\.bias\)", "extra": "unexpected 1 .*refinenet5",
             "reshape": "size mismatch"}[change]
    with pytest.raises(InputError, match=f"not a ZoeDepth.*{words}"):
        annotate("depth_zoe", picture(1, (64, 64)), model=path)


def test_server_offers_zoe_only_with_the_file_and_a1111_name_is_no_longer_an_alias(weights, tmp_path):
    from controlnet.web.inputs import FieldError
    from controlnet.web.modules import offered, resolve

    assert "depth_zoe" not in set(offered(tmp_path))
    with pytest.raises(FieldError, match=r"ZoeD_M12_N\.pt"):
        resolve("module", "depth_zoe", tmp_path)
    assert "depth_zoe" in set(offered(weights.parent))
    assert resolve("module", "depth_zoe", weights.parent) == "depth_zoe", "A1111's name, no longer the `depth` folder"


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("depth_zoe", model=weights)
