"""OpenPose (openpose, openpose_hand, openpose_face, openpose_faceonly, openpose_full) against controlnet_aux 0.0.10.

The reference in data/openpose_reference.npz was made once, outside the project, by
data/make_openpose_reference.py: controlnet_aux 0.0.10's OpenposeDetector (torch 2.14.1, CPU) loading
seeded random weights saved in the published layouts, on three seeded pictures (data/openpose_inputs.py
makes weights, pictures and stubs again here). Random weights find nobody, so the whole detector is
also compared with its networks swapped for the same stubs on both sides (two people, hands, faces).
Sizes are multiples of 64 and detect = image resolution: neither side resizes.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.annotators import annotate, openpose_modules
from controlnet.annotators.openpose import body_maps, body_peaks, detect_people, draw, poses_json
from controlnet.errors import InputError, MissingFileError
from detector_device import assert_reaches_read_back, assert_runs_on_the_network_device, networks_on_meta

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from openpose_inputs import (  # noqa: E402
    PICTURE_SEEDS,
    PICTURE_SIZES,
    StubBody,
    StubFace,
    StubHand,
    picture,
    random_state,
    raw_input,
)

REFERENCE = np.load(DATA / "openpose_reference.npz")
CASES = list(enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)))
MODULES = list(openpose_modules.MODULES)


def _net(name: str):
    from controlnet.annotators import openpose_network as n

    return {"body_pose_model.pth": n.BodyPoseNet, "hand_pose_model.pth": n.HandPoseNet, "facenet.pth": n.FaceNet}[name]()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The three files with seeded random weights, flat layer names as published."""
    folder = tmp_path_factory.mktemp("openpose")
    for name in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        shapes = {k: tuple(v.shape) for k, v in _net(name).state_dict().items()}
        torch.save(random_state(shapes, name), folder / name)
    return folder


def test_inputs_are_the_ones_the_reference_saw():
    assert tuple(REFERENCE["picture_seeds"]) == PICTURE_SEEDS
    assert [tuple(s) for s in REFERENCE["picture_sizes"]] == list(PICTURE_SIZES)


@pytest.mark.parametrize("index,case", CASES)
def test_body_network_and_peaks_equal_controlnet_aux(weights, index, case):
    net = openpose_modules.load_openpose(weights, "body_pose_model.pth")
    heatmaps, _, (pafs, heat) = body_maps(net, picture(*case)[:, :, ::-1].copy())
    assert np.abs(pafs.numpy() - REFERENCE[f"body_pafs_{index}"]).max() <= 1e-5
    assert np.abs(heat.numpy() - REFERENCE[f"body_heat_{index}"]).max() <= 1e-5
    expected = REFERENCE[f"candidates_{index}"]
    found = np.concatenate(body_peaks(heatmaps))
    assert len(expected) > 5, "the random network's heatmaps have peaks"
    assert np.array_equal(found[:, [0, 1, 3]], expected[:, [0, 1, 3]])
    assert np.abs(found[:, 2] - expected[:, 2]).max() <= 1e-5


def test_hand_and_face_networks_equal_controlnet_aux(weights):
    with torch.inference_mode():
        hand = openpose_modules.load_openpose(weights, "hand_pose_model.pth")(raw_input(41, 184))
        face = openpose_modules.load_openpose(weights, "facenet.pth")(raw_input(42, 128))
    assert np.abs(hand.numpy() - REFERENCE["hand_raw"]).max() <= 1e-5
    assert np.abs(face.numpy() - REFERENCE["face_raw"]).max() <= 1e-5
    assert REFERENCE["hand_raw"].std() > 0.05 and REFERENCE["face_raw"].std() > 0.05


@pytest.mark.parametrize("index,case", CASES)
def test_map_with_random_weights_equals_controlnet_aux(weights, index, case):
    out = annotate("openpose", picture(*case), resolution=min(case[1]), model=weights)
    assert np.abs(out.astype(int) - REFERENCE[f"real_openpose_{index}"].astype(int)).max() <= 1


@pytest.fixture(scope="module")
def stub_people():
    """Per picture, everyone found with the three networks swapped for the stubs (hands take a few seconds)."""
    return {index: detect_people(picture(*case), StubBody(case[0]), StubHand(), StubFace(as_list=False))
            for index, case in CASES}


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("index,case", CASES)
def test_maps_equal_controlnet_aux(stub_people, module, index, case):
    out = draw(stub_people[index], *case[1], *openpose_modules.MODULES[module])
    expected = REFERENCE[f"stub_{module}_{index}"]
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1
    assert (expected.max(axis=2) > 0).mean() > 0.005, "the reference drew something"


@pytest.mark.parametrize("module", ["openpose", "openpose_faceonly"])
def test_modules_detect_what_they_draw(monkeypatch, module):
    """Through annotate(): the module loads its networks by file name and draws its parts."""
    seed, size = CASES[0][1]
    stubs = {"body_pose_model.pth": StubBody(seed), "hand_pose_model.pth": StubHand(), "facenet.pth": StubFace(False)}
    monkeypatch.setattr(openpose_modules, "load_openpose", lambda model, name: stubs[name])
    out = annotate(module, picture(seed, size), resolution=min(size), model="unused")
    assert np.abs(out.astype(int) - REFERENCE[f"stub_{module}_0"].astype(int)).max() <= 1


@pytest.mark.parametrize("index,case", CASES)
def test_pose_json_equals_controlnet_aux(stub_people, index, case):
    ours = poses_json(stub_people[index], *case[1])
    expected = json.loads(str(REFERENCE[f"stub_json_{index}"]))
    assert len(expected["people"]) == 2, "two people assembled, the stray arm pruned"
    assert all(v is not None for person in expected["people"] for v in person.values()), "hands and faces found"
    assert (ours["canvas_width"], ours["canvas_height"]) == (expected["canvas_width"], expected["canvas_height"])
    assert len(ours["people"]) == len(expected["people"])
    for mine, theirs in zip(ours["people"], expected["people"]):
        assert mine.keys() == theirs.keys()
        for key in theirs:
            assert len(mine[key]) == len(theirs[key]), key
            assert np.abs(np.array(mine[key]) - np.array(theirs[key])).max() <= 1e-6, key
    json.dumps(ours)  # plain JSON types


def test_json_marks_missing_keypoints_and_absent_parts():
    image = picture(1, (256, 256))
    found = detect_people(image, StubBody(1), None, None)
    data = poses_json(found, 256, 256)
    person = data["people"][0]
    assert person["hand_left_keypoints_2d"] is None and person["face_keypoints_2d"] is None
    assert len(person["pose_keypoints_2d"]) == 54 and set(person["pose_keypoints_2d"][2::3]) <= {0.0, 1.0}
    body = draw(found, 256, 256)
    assert body.any() and not draw(found, 256, 256, body=False).any()


def test_missing_hand_file_is_named_when_the_body_file_is_there(weights, tmp_path):
    (tmp_path / "body_pose_model.pth").symlink_to(weights / "body_pose_model.pth")
    with pytest.raises(MissingFileError, match=r"hand_pose_model\.pth"):
        annotate("openpose_hand", picture(1, (64, 64)), model=tmp_path)


def test_a_file_path_finds_its_neighbours(weights):
    image = picture(5, (64, 64))
    assert np.array_equal(annotate("openpose_face", image, resolution=64, model=weights / "facenet.pth"),
                          annotate("openpose_face", image, resolution=64, model=weights))


def test_another_detectors_file_is_refused(weights, tmp_path):
    (tmp_path / "body_pose_model.pth").symlink_to(weights / "hand_pose_model.pth")
    with pytest.raises(InputError, match=r"not a body pose \(body_pose_model\.pth\) weight file"):
        annotate("openpose", picture(1, (64, 64)), model=tmp_path)
    (tmp_path / "facenet.pth").symlink_to(weights / "hand_pose_model.pth")
    with pytest.raises(InputError, match=r"not a face \(facenet\.pth\) weight file"):
        openpose_modules.load_openpose(tmp_path, "facenet.pth")


def test_server_offers_openpose_modules_only_with_their_files(weights, tmp_path):
    from controlnet.web.modules import offered

    assert not set(MODULES) & set(offered(tmp_path))
    body_only = tmp_path / "body_only"  # offered() is cached per folder
    body_only.mkdir()
    (body_only / "body_pose_model.pth").symlink_to(weights / "body_pose_model.pth")
    assert set(offered(body_only)) & set(MODULES) == {"openpose"}
    assert set(MODULES) <= set(offered(weights))


def test_server_refuses_openpose_without_files_and_names_them(tmp_path):
    from controlnet.web.inputs import FieldError
    from controlnet.web.modules import resolve

    with pytest.raises(FieldError, match=r"body_pose_model\.pth and hand_pose_model\.pth and facenet\.pth"):
        resolve("controlnet_module", "openpose_full", tmp_path)


def test_detect_answers_poses_for_openpose_modules_only(weights):
    """/controlnet/detect adds A1111's `poses` (one JSON per image, at the detect size) for the openpose modules."""
    from types import SimpleNamespace

    from controlnet.web.engine import Engine
    from controlnet.web.results import detect_response
    from controlnet.web.schema import DetectRequest

    server = SimpleNamespace(annotator_weights=lambda module: {"model": str(weights / "body_pose_model.pth")},
                             device="cpu")
    image = picture(7, (96, 128))
    poses = Engine.detect_poses(server, DetectRequest("openpose_hand", [image, image], 64, {}, []))
    assert poses == [{"people": [], "canvas_height": 64, "canvas_width": 85}] * 2  # random weights find nobody
    assert Engine.detect_poses(server, DetectRequest("canny", [image], 64, {}, [])) is None
    assert "poses" not in detect_response([image], [], None)
    assert detect_response([image], [], poses)["poses"] == poses


def test_cli_writes_the_map_and_the_pose_json(weights, tmp_path, capsys):
    from PIL import Image

    from bad_input_tools import assert_user_error, run_cli

    Image.fromarray(picture(9, (64, 96))).save(tmp_path / "in.png")
    argv = ["annotate", "openpose_hand", str(tmp_path / "in.png"), "-o", str(tmp_path / "pose.png"),
            "--resolution", "64", "--param", f"model={weights}", "--pose-json", str(tmp_path / "pose.json")]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "pose.json" in out
    assert json.loads((tmp_path / "pose.json").read_text()) == {"people": [], "canvas_height": 64, "canvas_width": 96}
    canny = ["annotate", "canny", str(tmp_path / "in.png"), "-o", str(tmp_path / "c.png"), "--pose-json", "x.json"]
    assert_user_error(canny, capsys, "OpenPose JSON comes from the openpose modules")


def test_runs_on_its_networks_device(weights):
    assert_runs_on_the_network_device("openpose_full", model=weights)


def test_hand_and_face_networks_run_on_their_device(weights):
    from controlnet.annotators.openpose import face_heatmaps, hand_heatmaps
    from controlnet.annotators.openpose_modules import load_openpose

    crop = picture(3, (64, 64))
    for name, heatmaps in (("hand_pose_model.pth", hand_heatmaps), ("facenet.pth", face_heatmaps)):
        with networks_on_meta():
            net = load_openpose(weights, name)
        assert_reaches_read_back(functools.partial(heatmaps, net, crop))
