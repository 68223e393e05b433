"""How tests/data/dwpose_reference.npz was made: A1111's `dw_openpose_full` as sd-webui-controlnet runs it.

controlnet_aux 0.0.10's DWPose needs mmpose, so the reference is the ONNX pipeline that A1111 runs
(and DWPose's authors ship for ControlNet): sd-webui-controlnet's annotator/openpose/cv_ox_det.py,
cv_ox_pose.py, wholebody.py, types.py and util.py at commit COMMIT, copied out of a git clone into a
temporary package (with a two-line body.py standing in for its torch OpenPose), run by OpenCV's DNN
module in an environment of its own (/tmp/auxenv: torch 2.14.1, OpenCV 5.1, numpy 2.4; none of that
code enters the project):

    git clone https://github.com/Mikubill/sd-webui-controlnet /path/to/clone
    /tmp/auxenv/bin/python tests/data/make_dwpose_reference.py /path/to/clone

The networks are the seeded stand-ins of make_dwpose_models.py (the real files' names and shapes).
Stored per photo (skimage's chelsea, coffee, rocket and camera, not used while writing the code):
the detector's raw output (every 211th row), the person boxes, the pose network's raw output for the
first box (every 37th column), the 134 OpenPose-ordered keypoints with scores, the drawn map
(`draw_poses` with body, hands and face, as dw_openpose_full draws) and the pose JSON
(`encode_poses_as_json`'s fields; DWPose keypoints there are in pixels).
"""

import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
from skimage import data

HERE = Path(__file__).resolve().parent
COMMIT = "56cec5b2"
FILES = ("cv_ox_det.py", "cv_ox_pose.py", "wholebody.py", "types.py", "util.py")
PHOTOS = ("chelsea", "coffee", "rocket", "camera")
DET_ROWS, POSE_COLUMNS = 211, 37


def photo(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return np.ascontiguousarray(np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3])


def reference_package(clone: str, folder: Path):
    package = folder / "sdwebui_openpose"
    package.mkdir()
    for name in FILES:
        text = subprocess.run(["git", "-C", clone, "show", f"{COMMIT}:annotator/openpose/{name}"], check=True,
                              capture_output=True, text=True).stdout
        (package / name).write_text(text)
    (package / "body.py").write_text("from .types import BodyResult, Keypoint  # noqa: F401\n")
    (package / "__init__.py").write_text("")
    sys.path.insert(0, str(folder))
    return (importlib.import_module(f"sdwebui_openpose.{m}") for m in ("wholebody", "util", "cv_ox_det", "cv_ox_pose"))


def draw_poses(util, poses, h, w):
    """sd-webui-controlnet's draw_poses (annotator/openpose/__init__.py, which imports A1111 itself)."""
    canvas = np.zeros((h, w, 3), np.uint8)
    for pose in poses:
        canvas = util.draw_bodypose(canvas, pose.body.keypoints)
        canvas = util.draw_handpose(canvas, pose.left_hand)
        canvas = util.draw_handpose(canvas, pose.right_hand)
        canvas = util.draw_facepose(canvas, pose.face)
    return canvas


def pose_json(poses, h, w) -> dict:
    """encode_poses_as_json's dictionary (same file)."""

    def flat(points):
        if not points:
            return None
        return [v for k in points for v in ([float(k.x), float(k.y), 1.0] if k is not None else [0.0, 0.0, 0.0])]

    return {"people": [{"pose_keypoints_2d": flat(p.body.keypoints), "face_keypoints_2d": flat(p.face),
                        "hand_left_keypoints_2d": flat(p.left_hand), "hand_right_keypoints_2d": flat(p.right_hand)}
                       for p in poses], "canvas_height": h, "canvas_width": w}


def main(clone: str, path=HERE / "dwpose_reference.npz"):
    out = {"photos": np.array(PHOTOS), "commit": np.array(COMMIT), "opencv": np.array(cv2.__version__)}
    with tempfile.TemporaryDirectory() as folder:
        wholebody, util, det, pose = reference_package(clone, Path(folder))
        model = wholebody.Wholebody(str(HERE / "dwpose_yolox_tiny.onnx"), str(HERE / "dwpose_rtmpose_tiny.onnx"))
        for i, name in enumerate(PHOTOS):
            image = photo(name)
            h, w = image.shape[:2]
            x, _ = det.preprocess(image, (640, 640))
            model.session_det.setInput(x[None])
            out[f"det_raw_{i}"] = model.session_det.forward(model.session_det.getUnconnectedOutLayersNames())[0][0, ::DET_ROWS]
            boxes = det.inference_detector(model.session_det, image)
            out[f"boxes_{i}"] = np.zeros((0, 4)) if boxes is None else np.asarray(boxes, np.float64).reshape(-1, 4)
            crops, _, _ = pose.preprocess(image, boxes if boxes is not None else [], (288, 384))
            raw = pose.inference(model.session_pose, crops[:1])[0]
            out[f"simcc_x_{i}"], out[f"simcc_y_{i}"] = raw[0][0, :, ::POSE_COLUMNS], raw[1][0, :, ::POSE_COLUMNS]
            info = model(image.copy())
            out[f"keypoints_{i}"] = np.zeros((0, 134, 3)) if info is None else info
            poses = model.format_result(info)
            out[f"map_{i}"] = draw_poses(util, poses, h, w)
            out[f"json_{i}"] = np.array(json.dumps(pose_json(poses, h, w)))
            print(name, image.shape, "boxes", len(out[f"boxes_{i}"]), "people", len(poses), flush=True)
    np.savez_compressed(path, **out)


if __name__ == "__main__":
    main(sys.argv[1])
