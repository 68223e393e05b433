"""seg_ufade20k from A1111's upernet_global_small.pth (UniFormer UperNet) against sd-webui-controlnet's own code.

controlnet_aux 0.0.10 has no UniFormer detector, so the reference outputs in data/uniformer_reference.npz
were made once, outside the project, by data/make_uniformer_reference.py: sd-webui-controlnet's
annotator/uniformer with its vendored mmcv / mmseg (torch 2.14.1, CPU), loading seeded random weights
saved in the published file's layout (an mmcv checkpoint: meta + state_dict) for a REDUCED network
(uniformer_inputs.REDUCED: widths 16-128, depths 1-2, head channels 32 instead of 64-512, 3-8, 512 —
the full network's 51.5 M values would make the pictures' run slow and the random logits poorly
scaled), through A1111's processor steps (pad to 64, mmseg's 2048×512 fit, palette at opacity 1) on
three seeded pictures at detect resolution = their short side (one not a multiple of 64). The
full-size key set is checked separately against the published config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_weight_files import refuses_hed_file, refuses_pickle, refuses_truncated
from controlnet.annotators import annotate
from controlnet.annotators.ade20k import ADE20K_PALETTE
from controlnet.errors import InputError, MissingFileError
from detector_device import assert_runs_on_the_network_device

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from pidinet_inputs import picture  # noqa: E402
from uniformer_inputs import (  # noqa: E402
    LOGIT_SAMPLE,
    PICTURE_SEEDS,
    PICTURE_SIZES,
    REDUCED,
    original_name,
    published_layout,
    random_uniformer_state,
)

REFERENCE = np.load(DATA / "uniformer_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


def mmseg_shapes(**config) -> dict[str, tuple[int, ...]]:
    """Tensor shapes of the network, under the names mmseg gives them in upernet_global_small.pth."""
    from controlnet.annotators.uniformer_network import UniFormerUperNet

    with torch.device("meta"):
        net = UniFormerUperNet(**config)
    return {original_name(k): tuple(v.shape) for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Seeded random weights of the reduced network in the published layout of upernet_global_small.pth."""
    path = tmp_path_factory.mktemp("uniformer") / "upernet_global_small.pth"
    state = random_uniformer_state(mmseg_shapes(**REDUCED), int(REFERENCE["weight_seed"]))
    torch.save(published_layout(state), path)
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_raw_logits_equal_the_reference(weights, index, case):
    from controlnet.annotators.uniformer import uniformer_logits

    logits, net_size, _ = uniformer_logits(picture(*case), weights)
    assert tuple(logits.shape) == tuple(REFERENCE[f"logits_shape_{index}"])
    assert min(net_size) == 512, "mmseg's test pipeline scales the short side to 512"
    assert np.abs(logits[LOGIT_SAMPLE].numpy() - REFERENCE[f"logits_{index}"]).max() <= 1e-5


@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_the_reference(weights, index, case):
    out = annotate("seg_ufade20k", picture(*case), resolution=min(case[1]), model=weights.parent)
    expected = REFERENCE[f"seg_ufade20k_{index}"]
    assert len(np.unique(REFERENCE[f"labels_{index}"])) > 5, "reference is flat"
    assert out.shape == expected.shape == (*case[1], 3)
    assert np.array_equal(out, expected)
    assert np.array_equal(out, ADE20K_PALETTE[REFERENCE[f"labels_{index}"]]), "the ADE20K palette, in RGB"


def test_full_size_network_takes_the_published_key_set_strictly():
    """The published config (UniFormer-S: widths 64-512, depths 3/4/8/3, 512-channel UperNet, 256-channel
    auxiliary FCN head, 150 classes): its 414 tensors, 51.5 M values, read back from the tensors and loaded strictly."""
    from controlnet.annotators.uniformer_network import build_uniformer, uniformer_config

    shapes = mmseg_shapes()
    assert len(shapes) == 414 and sum(int(np.prod(s)) for s in shapes.values()) == 51536775
    assert shapes["backbone.blocks3.7.attn.qkv.weight"] == (960, 320)
    assert shapes["backbone.blocks1.2.attn.weight"] == (64, 1, 5, 5)
    assert shapes["decode_head.bottleneck.conv.weight"] == (512, 2560, 3, 3)
    assert shapes["auxiliary_head.convs.0.bn.running_var"] == (256,)
    assert {"decode_head.conv_seg.bias", "auxiliary_head.conv_seg.weight", "backbone.patch_embed4.norm.bias"} <= set(shapes)
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    assert uniformer_config(state) == {"dims": (64, 128, 320, 512), "depths": (3, 4, 8, 3), "channels": 512,
                                       "aux_channels": 256, "num_classes": 150, "mlp_ratio": 4}
    net, renamed = build_uniformer(state, "UniFormer", "upernet_global_small.pth")
    net.load_state_dict(renamed, strict=True, assign=True)


def test_models_folder_in_a1111_layout(weights, tmp_path):
    folder = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/uniformer"
    folder.mkdir(parents=True)
    (folder / "upernet_global_small.pth").symlink_to(weights)
    image = picture(*CASES[2][1])
    assert np.array_equal(annotate("seg_ufade20k", image, resolution=100, models_dir=tmp_path),
                          annotate("seg_ufade20k", image, resolution=100, model=weights))


def test_a_transformers_upernet_folder_still_serves(tmp_path):
    """Without the published file, a transformers UperNet folder named seg_ufade20k in the models folder is used."""
    from controlnet.web.modules import offered
    from test_annotators_learned import save_upernet

    folder = save_upernet(tmp_path / "seg_ufade20k")
    image = picture(*CASES[0][1])
    by_folder = annotate("seg_ufade20k", image, resolution=64, model=folder)
    assert np.array_equal(annotate("seg_ufade20k", image, resolution=64, models_dir=tmp_path), by_folder)
    assert np.array_equal(annotate("seg_ufade20k", image, resolution=64, model=tmp_path), by_folder)
    assert "seg_ufade20k" in offered(tmp_path)


def test_missing_file_names_it_and_where_it_is_published(tmp_path):
    with pytest.raises(MissingFileError) as caught:
        annotate("seg_ufade20k", picture(1, (64, 64)), model=tmp_path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    for part in ("upernet_global_small.pth", "uniformer/", "lllyasviel/Annotators", "seg_ufade20k"):
        assert part in message


def test_truncated_file_is_refused(weights, tmp_path):
    refuses_truncated("seg_ufade20k", weights, tmp_path / "upernet_global_small.pth", keep=100_000)


def test_another_detectors_file_is_refused(tmp_path):
    refuses_hed_file("seg_ufade20k", tmp_path, "UniFormer")


def test_pickle_that_would_run_code_is_not_unpickled(tmp_path):
    refuses_pickle("seg_ufade20k", tmp_path / "upernet_global_small.pth", wrap="state_dict")


@pytest.mark.parametrize("numpy_names", ["numpy 2", "numpy 1"])
def test_numpy_values_in_the_checkpoints_meta_are_read_safely(weights, tmp_path, numpy_names):
    """mmcv keeps training metadata beside the tensors, which may hold numpy scalars and arrays (a best score); the
    safe load rebuilds those (plain data), under numpy 1's module names too, and still refuses code."""
    checkpoint = torch.load(weights, weights_only=True)
    checkpoint["meta"]["hook_msgs"] = {"best_score": np.float64(0.4711), "best_iter": np.int64(160000)}
    checkpoint["meta"]["class_weight"] = np.ones(3, np.float32)
    path = tmp_path / "upernet_global_small.pth"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)  # the pickle stream as one block of bytes
    if numpy_names == "numpy 1":
        raw = path.read_bytes()
        assert b"numpy._core.multiarray" in raw
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    image = picture(3, (64, 96))
    assert np.array_equal(annotate("seg_ufade20k", image, resolution=64, model=path),
                          annotate("seg_ufade20k", image, resolution=64, model=weights))
    checkpoint["meta"]["hook"] = argparse.Namespace(code="would run on load")
    torch.save(checkpoint, path)
    with pytest.raises(InputError, match="not unpickled"):
        annotate("seg_ufade20k", image, resolution=64, model=path)


def test_server_offers_seg_ufade20k_only_with_weights(weights, tmp_path):
    from controlnet.web.modules import offered

    assert "seg_ufade20k" not in offered(tmp_path)
    assert "seg_ufade20k" in offered(weights.parent)


def test_cli_and_detect_endpoint_find_the_file_in_the_models_folder(weights, tmp_path, capsys):
    """`controlnet annotate seg_ufade20k --models-dir`, and the server's /controlnet/detect (module `uniformer`, A1111's
    name) with --annotator-dir, give the API's map."""
    from functools import partial
    from types import SimpleNamespace

    from PIL import Image

    from bad_input_tools import run_cli
    from controlnet.web.engine import Engine
    from controlnet.web.modules import resolve
    from controlnet.web.schema import DetectRequest

    image = picture(*CASES[1][1])
    expected = annotate("seg_ufade20k", image, resolution=128, model=weights)
    Image.fromarray(image).save(tmp_path / "in.png")
    argv = ["annotate", "seg_ufade20k", tmp_path / "in.png", "-o", tmp_path / "seg.png", "--resolution", "128",
            "--models-dir", weights.parent]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    assert np.array_equal(np.array(Image.open(tmp_path / "seg.png")), expected)
    module = resolve("controlnet_module", "uniformer", weights.parent)
    server = SimpleNamespace(annotator_weights=partial(Engine.annotator_weights, SimpleNamespace(annotator_dir=weights.parent)),
                             device="cpu")
    detected = Engine.detect(server, DetectRequest(module, [image], 128, {}, []))
    assert module == "seg_ufade20k" and np.array_equal(detected[0], expected)


def test_evaluate_scores_ade20k_miou_with_the_file(weights):
    """evaluate's ADE20K mIoU re-segments with upernet_global_small.pth when the models folder has it: a picture
    against its own seg_ufade20k map scores 100 %, against other classes 0."""
    from controlnet.evaluation import protocol

    pictures = [picture(*case) for _, case in CASES[:2]]
    assert protocol.weights_for(protocol.ADE20K, weights.parent) == str(weights)
    assert "cnpp_ade20k_miou" not in protocol.not_computed(("seg_ufade20k",), False, weights.parent, 128)
    own = [annotate("seg_ufade20k", p, resolution=min(p.shape[:2]), model=weights) for p in pictures]
    assert protocol.estimate(protocol.ADE20K, pictures, own, weights.parent, 0.95).value == 100.0
    from controlnet.annotators.uniformer import uniformer_labels

    other = [ADE20K_PALETTE[(uniformer_labels(p, weights) + 1) % 150] for p in pictures]
    assert protocol.estimate(protocol.ADE20K, pictures, other, weights.parent, 0.95).value == 0.0


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("seg_ufade20k", model=weights)
