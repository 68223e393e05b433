"""LeReS (depth_leres) and LeReS++ (depth_leres++) from the original res101.pth / latest_net_G.pth layouts,
against controlnet_aux 0.0.10.

The reference outputs in data/leres_reference.npz were made once, outside the project, by
data/make_leres_reference.py: controlnet_aux 0.0.10's LeresDetector (torch 2.14.1, CPU) with seeded
random weights in the published file layouts, on three seeded pictures (data/leres_inputs.py and
pidinet_inputs.picture make both again here). The published networks (ResNeXt-101 32x8d with a
256/512-wide decoder, 64-wide merge U-Net) would make each boosted map take minutes on a CPU, so that
script builds them REDUCED with controlnet_aux's own classes (sizes in leres_inputs.py) and stores their
parameter names and shapes, from which the test makes the same files; our loader reads the sizes from
the file. Sizes are multiples of 64, so neither side resizes to the detect resolution; every step of
the boost (resolution search, double estimates at 448 px and above, merges at 1024 px, local patches
where the picture has them) runs on both sides.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_weight_files import IMAGE, refuses_hed_file, refuses_pickle, refuses_truncated
from controlnet.annotators import annotate
from controlnet.errors import InputError, MissingFileError
from detector_device import assert_runs_on_the_network_device, networks_on_meta

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from leres_inputs import (  # noqa: E402
    PATCHED,
    PICTURE_SEEDS,
    PICTURE_SIZES,
    THRESHOLDS,
    leres_picture,
    published_layout,
    random_leres_state,
)
from pidinet_inputs import picture, random_state  # noqa: E402

REFERENCE = np.load(DATA / "leres_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))


def stored_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    names, shapes = REFERENCE[f"{kind}_names"], REFERENCE[f"{kind}_shapes"]
    return {str(n): tuple(int(d) for d in str(s).split(",") if d) for n, s in zip(names, shapes)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """res101.pth and latest_net_G.pth of the reduced networks with the reference's seeded weights, in one folder."""
    path = tmp_path_factory.mktemp("leres")
    torch.save(published_layout(random_leres_state(stored_shapes("depth"), int(REFERENCE["weight_seed"]))),
               path / "res101.pth")
    torch.save(random_state(stored_shapes("merge"), int(REFERENCE["merge_seed"])), path / "latest_net_G.pth")
    return path


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)
    assert [tuple(t) for t in REFERENCE["thresholds"]] == list(THRESHOLDS)


def run_and_record(monkeypatch, folder: Path, index: int, boost: bool):
    """(the map, the raw depth it was made from) of depth_leres / depth_leres++ on the index-th picture, with
    the reference's thresholds: one run gives both (the boosted picture with patches takes a while)."""
    from controlnet.annotators import leres, leres_boost

    module, function = (leres_boost, "boosted_depth") if boost else (leres, "leres_depth")
    real, raw = getattr(module, function), []
    monkeypatch.setattr(module, function, lambda *a: raw.append(real(*a)) or raw[-1])
    near, background = THRESHOLDS[index]
    out = annotate("depth_leres++" if boost else "depth_leres", leres_picture(index), resolution=min(PICTURE_SIZES[index]),
                   model=folder, remove_near=near, remove_background=background)
    return out, raw[0]


def assert_equal_to_reference(out, raw, index: int, key: str):
    expected_raw, expected = REFERENCE[f"raw_{key}_{index}"], REFERENCE[f"{key}_{index}"]
    assert raw.shape == expected_raw.shape == PICTURE_SIZES[index] and expected_raw.std() > 0
    assert np.abs(raw - expected_raw).max() <= 1e-5 * max(1.0, np.abs(expected_raw).max())
    assert out.shape == (*PICTURE_SIZES[index], 3) and expected.shape == PICTURE_SIZES[index]  # stored: one channel
    assert len(np.unique(expected)) > 20, "reference is flat"
    assert (out == out[:, :, :1]).all()
    assert np.abs(out[:, :, 0].astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize("index", range(len(CASES)))
def test_depth_leres_equals_controlnet_aux(folder, monkeypatch, index):
    assert_equal_to_reference(*run_and_record(monkeypatch, folder, index, boost=False), index, "leres")


@pytest.mark.parametrize("index", [i for i in range(len(CASES)) if i != PATCHED])
def test_depth_leres_plus_plus_equals_controlnet_aux(folder, monkeypatch, index):
    """Pictures whose resolution search ends above their long side: the double estimate only."""
    assert_equal_to_reference(*run_and_record(monkeypatch, folder, index, boost=True), index, "leres_boost")


@pytest.mark.slow
def test_depth_leres_plus_plus_with_local_patches_equals_controlnet_aux(folder, monkeypatch):
    """The picture refined by 4 local patches (each two LeReS runs at 448 and 896 px and two merges at 1024)."""
    assert_equal_to_reference(*run_and_record(monkeypatch, folder, PATCHED, boost=True), PATCHED, "leres_boost")


def test_local_patches_are_exercised():
    """At least one picture is refined patch by patch (its resolution search ends at or below its long side)."""
    from controlnet.annotators.leres_boost import processing_resolution

    assert processing_resolution(leres_picture(PATCHED))[0] <= max(PICTURE_SIZES[PATCHED])


def test_thresholds_remove_near_and_background():
    from controlnet.annotators.leres import depth_to_gray

    depth = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    plain = depth_to_gray(depth)
    assert plain[0, 0] == 255 and plain[-1, -1] == 0  # near (small depth) is white
    near = depth_to_gray(depth, remove_near=50)
    assert (near[plain > 128] == 255).all() and (near[plain < 127] == plain[plain < 127]).all()
    background = depth_to_gray(depth, remove_background=50)
    assert (background[plain <= 127] == 0).all() and (background[plain > 128] == plain[plain > 128]).all()


def test_real_size_network_is_resnext101_32x8d():
    """The default sizes are the published ones: the encoder has torchvision's resnext101_32x8d parameters
    (88,791,336 with its 1000-class head, which LeReS has not)."""
    from controlnet.annotators.leres_merge_network import MergeNet
    from controlnet.annotators.leres_network import LeresDepth

    with torch.device("meta"):
        net, merge = LeresDepth(), MergeNet()
    encoder = net.depth_model.encoder_modules.encoder
    assert sum(p.numel() for p in encoder.parameters()) == 88_791_336 - (2048 * 1000 + 1000)
    assert tuple(merge.state_dict()["model.model.0.weight"].shape) == (64, 2, 4, 4)
    assert tuple(merge.state_dict()["model.model.3.bias"].shape) == (1,)


def test_state_names_are_the_references(folder):
    """Our modules, sized from the file, have exactly the reference's parameter names and shapes."""
    from controlnet.annotators.leres import load_leres, load_merge

    for kind, net in (("depth", load_leres(folder)), ("merge", load_merge(folder))):
        assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == stored_shapes(kind)


def test_models_folder_in_a1111_layout(folder, tmp_path):
    downloads = tmp_path / "extensions/sd-webui-controlnet/annotator/downloads/leres"
    downloads.mkdir(parents=True)
    for name in ("res101.pth", "latest_net_G.pth"):
        (downloads / name).symlink_to(folder / name)
    image = leres_picture(0)
    assert np.array_equal(annotate("depth_leres++", image, resolution=192, models_dir=tmp_path),
                          annotate("depth_leres++", image, resolution=192, model=folder))


def test_odd_sizes_are_padded_and_cropped_back(folder):
    image = picture(9, (70, 100))
    assert annotate("depth_leres", image, resolution=70, model=folder).shape == (70, 100, 3)
    assert annotate("depth_leres++", image, resolution=70, model=folder).shape == (70, 100, 3)


def test_missing_files_name_them_and_where_they_are_published(folder, tmp_path):
    with pytest.raises(MissingFileError, match=r"res101\.pth.*leres/.*lllyasviel/Annotators"):
        annotate("depth_leres", IMAGE, model=tmp_path)
    (tmp_path / "res101.pth").symlink_to(folder / "res101.pth")
    with pytest.raises(MissingFileError, match=r"latest_net_G\.pth.*leres/.*lllyasviel/Annotators"):
        annotate("depth_leres++", IMAGE, model=tmp_path)


def test_truncated_file_is_refused(folder, tmp_path):
    refuses_truncated("depth_leres", folder / "res101.pth", tmp_path / "res101.pth", keep=200_000)


def test_another_detectors_file_is_refused(tmp_path):
    refuses_hed_file("depth_leres", tmp_path, "LeReS depth")


def test_another_detectors_file_as_the_merge_network_is_refused(folder, tmp_path):
    from controlnet.annotators.hed_network import ControlNetHED

    (tmp_path / "res101.pth").symlink_to(folder / "res101.pth")
    torch.save(ControlNetHED().state_dict(), tmp_path / "latest_net_G.pth")
    with pytest.raises(InputError, match="not a LeReS\\+\\+ merge network"):
        annotate("depth_leres++", IMAGE, model=tmp_path)


def test_pickle_that_would_run_code_is_not_unpickled(tmp_path):
    refuses_pickle("depth_leres", tmp_path / "res101.pth", wrap="depth_model")


@pytest.mark.parametrize("name,value", [("remove_near", 101), ("remove_background", -1), ("remove_near", float("nan"))])
def test_thresholds_out_of_range_are_refused(folder, name, value):
    with pytest.raises(InputError, match=name):
        annotate("depth_leres", IMAGE, model=folder, **{name: value})


def test_server_offers_each_module_only_with_its_files(folder, tmp_path):
    from controlnet.web.modules import offered, resolve

    assert not {"depth_leres", "depth_leres++"} & set(offered(tmp_path))
    only_depth = tmp_path / "only_res101"  # offered() is cached per folder: a folder of its own
    only_depth.mkdir()
    (only_depth / "res101.pth").symlink_to(folder / "res101.pth")
    assert "depth_leres" in offered(only_depth) and "depth_leres++" not in offered(only_depth)
    assert {"depth_leres", "depth_leres++"} <= set(offered(folder))
    assert resolve("controlnet_module", "depth_leres++", folder) == "depth_leres++"
    assert resolve("controlnet_module", "depth_leres", folder) == "depth_leres"  # no longer the transformers stand-in


def test_cli_writes_the_map(folder, tmp_path, capsys):
    from PIL import Image

    from bad_input_tools import assert_user_error, run_cli

    image = leres_picture(0)
    Image.fromarray(image).save(tmp_path / "in.png")
    argv = ["annotate", "depth_leres", str(tmp_path / "in.png"), "-o", str(tmp_path / "depth.png"), "--resolution", "192",
            "--param", f"model={folder}", "--param", "remove_near=20"]
    code, _, err = run_cli(argv, capsys)
    assert code == 0, err
    expected = annotate("depth_leres", image, resolution=192, model=folder, remove_near=20)
    assert np.array_equal(np.array(Image.open(tmp_path / "depth.png").convert("RGB")), expected)
    assert_user_error([*argv[:-1], "remove_near=120"], capsys, "remove_near", "100")


def test_detect_maps_a1111_thresholds_onto_the_module(folder):
    """/controlnet/detect: threshold_a / threshold_b are remove near / remove background %, weights from --annotator-dir."""
    from types import SimpleNamespace

    from controlnet.web.engine import Engine
    from controlnet.web.modules import bind_sliders
    from controlnet.web.schema import DetectRequest

    warnings = []
    resolution, params = bind_sliders("controlnet_module", "depth_leres++", 192, 20, 30, warnings)
    assert (resolution, params, warnings) == (192, {"remove_near": 20.0, "remove_background": 30.0}, [])
    server = SimpleNamespace(annotator_dir=folder, device="cpu")
    server.annotator_weights = lambda module: Engine.annotator_weights(server, module)
    image = leres_picture(0)
    maps = Engine.detect(server, DetectRequest("depth_leres++", [image], resolution, params))
    assert np.array_equal(maps[0], annotate("depth_leres++", image, 192, model=folder, **params))


def test_runs_on_its_networks_device(folder):
    assert_runs_on_the_network_device("depth_leres", model=folder)


def test_runs_on_its_networks_device_boosted(folder):
    assert_runs_on_the_network_device("depth_leres++", model=folder)


def test_merge_network_runs_on_its_device(folder):
    from controlnet.annotators.leres import load_merge
    from controlnet.annotators.leres_boost import MERGE_SIZE, merge

    with networks_on_meta():
        net = load_merge(folder)
        low, high = (np.random.default_rng(i).random((MERGE_SIZE, MERGE_SIZE), np.float32) for i in (1, 2))
        assert merge(net, low, high).device.type == "meta"
