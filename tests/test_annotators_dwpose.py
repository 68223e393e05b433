"""DWPose (`dw_openpose_full`) against A1111's own pipeline, and its bad weight files.

The reference in data/dwpose_reference.npz was made once, outside the project, by
data/make_dwpose_reference.py: sd-webui-controlnet's ONNX DWPose code (cv_ox_det / cv_ox_pose /
wholebody / util, run by OpenCV's DNN module as A1111 runs it; controlnet_aux 0.0.10's DWPose needs
mmpose) on four of skimage's photos, with the seeded stand-in networks of data/make_dwpose_models.py
(the published files' input/output names and shapes). Two photos get no person box from the
detector (the whole photo is then one box, as in the reference), two get three and five.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from controlnet.annotators import annotate, dwpose, openpose_modules
from controlnet.annotators.onnx_net import load_onnx, onnxruntime_installed
from controlnet.errors import InputError, MissingFileError

DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(DATA))
from make_dwpose_reference import DET_ROWS, PHOTOS, POSE_COLUMNS, photo  # noqa: E402

REFERENCE = np.load(DATA / "dwpose_reference.npz")
CASES = list(enumerate(PHOTOS))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The stand-ins under the published names, in sd-webui-controlnet's downloads/openpose/ layout."""
    root = tmp_path_factory.mktemp("dwpose")
    (root / "openpose").mkdir()
    shutil.copy(DATA / "dwpose_yolox_tiny.onnx", root / "openpose" / dwpose.DETECTOR)
    shutil.copy(DATA / "dwpose_rtmpose_tiny.onnx", root / "openpose" / dwpose.POSE)
    return root


@pytest.fixture(scope="module")
def nets(folder):
    return dwpose.load_nets(folder / "openpose")


def test_the_reference_saw_these_photos():
    assert [str(p) for p in REFERENCE["photos"]] == list(PHOTOS)


@pytest.mark.parametrize("i, name", CASES)
def test_raw_outputs_and_boxes_equal_the_reference(nets, i, name):
    image = photo(name)
    x, ratio = dwpose.letterbox(image)
    raw = nets.detector.run(x)[0]
    np.testing.assert_allclose(raw[0, ::DET_ROWS], REFERENCE[f"det_raw_{i}"], rtol=0, atol=1e-5)
    boxes = dwpose.person_boxes(nets.detector, image)
    np.testing.assert_allclose(boxes, REFERENCE[f"boxes_{i}"], rtol=0, atol=1e-4)
    first = boxes[0] if len(boxes) else [0, 0, image.shape[1], image.shape[0]]
    crop, _, _ = dwpose.crop_person(image, first)
    simcc_x, simcc_y = sorted(nets.pose.run(crop[None]), key=lambda o: o.shape[-1])
    np.testing.assert_allclose(simcc_x[0, :, ::POSE_COLUMNS], REFERENCE[f"simcc_x_{i}"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(simcc_y[0, :, ::POSE_COLUMNS], REFERENCE[f"simcc_y_{i}"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("i, name", CASES)
def test_keypoints_map_and_json_equal_the_reference(folder, nets, i, name):
    image = photo(name)
    h, w = image.shape[:2]
    boxes = dwpose.person_boxes(nets.detector, image)
    boxes = boxes if len(boxes) else np.array([[0.0, 0.0, w, h]])
    info = dwpose.to_openpose_order(*dwpose.whole_body(nets.pose, image, boxes))
    np.testing.assert_allclose(info, REFERENCE[f"keypoints_{i}"], rtol=0, atol=1e-6)
    drawn = annotate("dw_openpose_full", image, resolution=min(h, w), models_dir=folder)
    assert np.array_equal(drawn, REFERENCE[f"map_{i}"])
    ours = dwpose.dwpose_json(image, folder / "openpose")
    theirs = json.loads(str(REFERENCE[f"json_{i}"]))
    assert (ours["canvas_height"], ours["canvas_width"]) == (theirs["canvas_height"], theirs["canvas_width"])
    assert len(ours["people"]) == len(theirs["people"]) == len(boxes)
    for mine, ref in zip(ours["people"], theirs["people"]):
        for key, points in ref.items():
            assert (mine[key] is None) == (points is None), key
            if points is not None:  # ours normalised, as the openpose modules write; DWPose's reference in pixels
                a, b = np.array(mine[key]).reshape(-1, 3), np.array(points).reshape(-1, 3)
                np.testing.assert_array_equal(a[:, 2], b[:, 2])
                np.testing.assert_allclose(a[:, :2] * [w, h], b[:, :2], rtol=1e-9, atol=1e-9)


def test_nothing_detected_draws_nobody():
    class Silent:
        def run(self, x):
            out = np.zeros((1, 8400, 85), np.float32)
            out[..., 2:4] = 1.0
            return [out]

    nets = dwpose.Nets(Silent(), None)  # the pose network is never reached
    assert dwpose.detect(photo("rocket"), nets) == []


@pytest.mark.skipif(not onnxruntime_installed(), reason="onnxruntime not installed (the dwpose extra)")
def test_onnxruntime_backend_equals_opencv(folder, nets):
    image = photo("rocket")
    ort = dwpose.load_nets(folder / "openpose", "onnxruntime")
    assert ort.detector.backend == "onnxruntime"
    x, _ = dwpose.letterbox(image)
    np.testing.assert_allclose(ort.detector.run(x)[0], nets.detector.run(x)[0], rtol=0, atol=1e-5)
    drawn = annotate("dw_openpose_full", image, resolution=min(image.shape[:2]), model=folder, backend="onnxruntime")
    assert np.array_equal(drawn, REFERENCE["map_2"])
    dwpose._LAST.clear()  # the pose JSON runs the backend it is given too (it re-detected with OpenCV before)
    got = openpose_modules.detect_json("dw_openpose_full", image, min(image.shape[:2]), str(folder / "openpose"),
                                       backend="onnxruntime")
    assert len(got["people"]) == 3 and dwpose._LAST[0][1].detector.backend == "onnxruntime"


def test_onnxruntime_runs_on_the_detectors_device():
    from controlnet.annotators.onnx_net import _providers

    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _providers("cpu", both) == ["CPUExecutionProvider"]  # the CPU when asked, even with a GPU build
    assert _providers("cuda:1", both) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    with pytest.raises(InputError, match="cuda: this onnxruntime has no CUDA provider .*onnxruntime-gpu"):
        _providers("cuda", ["CPUExecutionProvider"])


def test_topk_export_is_named_when_opencv_cannot_run_it(monkeypatch, tmp_path):
    import cv2

    from controlnet.annotators import onnx_net

    def refuse(path):
        raise cv2.error("Unsupported ONNX layer type: TopK")

    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", refuse)
    monkeypatch.setattr(onnx_net, "onnxruntime_installed", lambda: False)
    path = tmp_path / "yolox_l.onnx"
    shutil.copy(DATA / "dwpose_yolox_topk.onnx", path)
    with pytest.raises(InputError, match="TopK layer.*pip install onnxruntime"):
        load_onnx(path, "YOLOX person detector", 1)
    plain = tmp_path / "plain.onnx"
    shutil.copy(DATA / "dwpose_yolox_tiny.onnx", plain)
    with pytest.raises(InputError, match="not an ONNX file"):  # no TopK: a plain read error
        load_onnx(plain, "YOLOX person detector", 1)


@pytest.mark.skipif(not onnxruntime_installed(), reason="onnxruntime not installed (the dwpose extra)")
def test_topk_export_falls_back_to_onnxruntime(monkeypatch, tmp_path):
    import cv2

    def refuse(path):
        raise cv2.error("Unsupported ONNX layer type: TopK")

    monkeypatch.setattr(cv2.dnn, "readNetFromONNX", refuse)
    path = tmp_path / "topk.onnx"
    shutil.copy(DATA / "dwpose_yolox_topk.onnx", path)
    assert load_onnx(path, "YOLOX person detector", 1).backend == "onnxruntime"


def test_bad_files_are_refused_in_one_line(folder, tmp_path):
    image = photo("chelsea")
    bad = tmp_path / "bad"
    bad.mkdir()
    pose = (folder / "openpose" / dwpose.POSE).read_bytes()
    shutil.copy(folder / "openpose" / dwpose.DETECTOR, bad / dwpose.DETECTOR)
    (bad / dwpose.POSE).write_bytes(pose[: len(pose) // 3])  # truncated
    with pytest.raises(InputError, match="cannot read the DWPose pose network.*not an ONNX file, or cut short"):
        annotate("dw_openpose_full", image, model=bad)
    import argparse
    import pickle

    evil = {"conv1_1.weight": [0.0], "note": argparse.Namespace(code="would run if unpickled")}
    (bad / dwpose.POSE).write_bytes(pickle.dumps(evil))  # a pickle (as .pth files are) under the ONNX name
    with pytest.raises(InputError, match="not an ONNX file"):
        annotate("dw_openpose_full", image, model=bad)
    shutil.copy(folder / "openpose" / dwpose.DETECTOR, bad / dwpose.POSE)  # another detector's file
    with pytest.raises(InputError, match="is not a DWPose pose network file: it has 1 outputs"):
        annotate("dw_openpose_full", image, model=bad)


def test_missing_file_names_it_and_where_it_is_published(tmp_path):
    shutil.copy(DATA / "dwpose_yolox_tiny.onnx", tmp_path / dwpose.DETECTOR)
    with pytest.raises(MissingFileError, match=r"dw-ll_ucoco_384\.onnx.*huggingface\.co/yzd-v/DWPose"):
        annotate("dw_openpose_full", photo("chelsea"), model=tmp_path)
    with pytest.raises(InputError, match="backend"):
        annotate("dw_openpose_full", photo("chelsea"), model=tmp_path, backend="tensorrt")


def test_pose_json_hook_accepts_dwpose(folder):
    openpose_modules.check_json_module("dw_openpose_full")
    image = photo("rocket")
    got = openpose_modules.detect_json("dw_openpose_full", image, min(image.shape[:2]), str(folder / "openpose"))
    assert len(got["people"]) == 3 and got["canvas_width"] == image.shape[1]


def test_cli_writes_the_map_and_the_pose_json(folder, tmp_path, capsys):
    from PIL import Image

    from bad_input_tools import assert_user_error, run_cli

    image = photo("rocket")
    Image.fromarray(image).save(tmp_path / "in.png")
    argv = ["annotate", "dw_openpose_full", str(tmp_path / "in.png"), "-o", str(tmp_path / "pose.png"),
            "--resolution", str(min(image.shape[:2])), "--models-dir", str(folder), "--pose-json", str(tmp_path / "p.json")]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0 and "p.json" in out
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pose.png")), REFERENCE["map_2"])
    assert len(json.loads((tmp_path / "p.json").read_text())["people"]) == 3
    bad = [*argv[:-2], "--param", "backend=tensorrt"]
    assert_user_error(bad, capsys, "backend")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_user_error([*argv[:5], "--models-dir", str(empty)], capsys, "yolox_l.onnx", "yzd-v/DWPose")


def test_detect_answers_poses_for_dwpose(folder):
    from types import SimpleNamespace

    from controlnet.web.engine import Engine
    from controlnet.web.schema import DetectRequest

    server = SimpleNamespace(annotator_weights=lambda module: {"model": str(folder / "openpose" / dwpose.DETECTOR)},
                             device="cpu")
    image = photo("rocket")
    request = DetectRequest("dw_openpose_full", [image], min(image.shape[:2]), {}, [])
    poses = Engine.detect_poses(server, request)
    assert len(poses) == 1 and len(poses[0]["people"]) == 3
    server.device = "cuda:99"  # the server's device reaches the detectors (here: one this machine lacks)
    for answer in (Engine.detect_poses, Engine.detect):
        with pytest.raises(InputError, match="device cuda:99 is not available"):
            answer(server, request)
