"""How tests/data/openpose_reference.npz was made: controlnet_aux 0.0.10's OpenposeDetector.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10 matplotlib    # its hand drawing imports matplotlib
    /tmp/auxenv/bin/python tests/data/make_openpose_reference.py

It builds controlnet_aux's own bodypose_model, handpose_model and FaceNet, gives them the seeded
random tensors of openpose_inputs.random_state, saves them in the published layouts (flat layer
names: `conv1_1.weight`, ...) as body_pose_model.pth, hand_pose_model.pth and facenet.pth, and
loads that folder with `OpenposeDetector.from_pretrained` (its own loading code). Stored, on the
three seeded pictures of openpose_inputs (detect = image resolution = the short side, so nothing
resizes):
- real random weights: the body network's raw outputs (PAFs, heatmaps) on the detector's own
  input, the heatmap peaks (`candidate`), and the openpose map; the hand and face networks'
  raw outputs on seeded inputs;
- the networks swapped for openpose_inputs' stubs: the maps of the five A1111 modules, the
  keypoints and the pose JSON in sd-webui-controlnet's `encode_poses_as_dict` format.
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.open_pose import OpenposeDetector, draw_poses
from controlnet_aux.open_pose.face import FaceNet
from controlnet_aux.open_pose.model import bodypose_model, handpose_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
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

MODULES = {"openpose": (True, False, False), "openpose_hand": (True, True, False), "openpose_face": (True, False, True),
           "openpose_faceonly": (False, False, True), "openpose_full": (True, True, True)}
RAW_HAND_SEED, RAW_HAND_SIZE, RAW_FACE_SEED, RAW_FACE_SIZE = 41, 184, 42, 128


def published(net, name: str, flat_names: bool) -> dict:
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    if flat_names:  # the files hold `conv1_1.weight`; controlnet_aux's modules nest them as `model0.conv1_1.weight`
        shapes = {k.split(".", 1)[1]: v for k, v in shapes.items()}
    return random_state(shapes, name)


def pose_dict(poses, height, width) -> dict:
    """sd-webui-controlnet's encode_poses_as_dict (controlnet_aux 0.0.10 has none): x, y, 1.0 per keypoint."""

    def flat(keypoints):
        if not keypoints:
            return None
        return [v for k in keypoints for v in ([float(k.x), float(k.y), 1.0] if k is not None else [0.0, 0.0, 0.0])]

    return {"people": [{"pose_keypoints_2d": flat(p.body.keypoints), "face_keypoints_2d": flat(p.face),
                        "hand_left_keypoints_2d": flat(p.left_hand), "hand_right_keypoints_2d": flat(p.right_hand)}
                       for p in poses], "canvas_height": height, "canvas_width": width}


def main(seeds=PICTURE_SEEDS, path=HERE / "openpose_reference.npz"):
    """`seeds` and `path` differ only for development runs on other pictures."""
    out = {"picture_seeds": np.array(seeds), "picture_sizes": np.array(PICTURE_SIZES)}
    with tempfile.TemporaryDirectory() as folder:
        for name, net, flat in (("body_pose_model.pth", bodypose_model(), True),
                                ("hand_pose_model.pth", handpose_model(), True), ("facenet.pth", FaceNet(), False)):
            torch.save(published(net, name, flat), Path(folder) / name)
        detector = OpenposeDetector.from_pretrained(folder)
    captured = []
    detector.body_estimation.model.register_forward_hook(lambda m, i, o: captured.append([t.numpy() for t in o]))
    with torch.no_grad():
        out["hand_raw"] = detector.hand_estimation.model(raw_input(RAW_HAND_SEED, RAW_HAND_SIZE)).numpy()
        out["face_raw"] = detector.face_estimation.model(raw_input(RAW_FACE_SEED, RAW_FACE_SIZE))[-1].numpy()
    for i, (seed, size) in enumerate(zip(seeds, PICTURE_SIZES)):
        image = picture(seed, size)
        res = {"detect_resolution": min(size), "image_resolution": min(size), "output_type": "np"}
        captured.clear()
        candidate, _ = detector.body_estimation(image[:, :, ::-1].copy())
        out[f"body_pafs_{i}"], out[f"body_heat_{i}"] = captured[0]
        out[f"candidates_{i}"] = np.asarray(candidate, np.float64).reshape(-1, 4)
        out[f"real_openpose_{i}"] = detector(image, **res)
        print("real", i, flush=True)
    detector.hand_estimation.model, detector.face_estimation.model = StubHand(), StubFace(as_list=True)
    for i, (seed, size) in enumerate(zip(seeds, PICTURE_SIZES)):
        image = picture(seed, size)
        detector.body_estimation.model = StubBody(seed)
        # one detection with hands and faces, drawn as each module draws it (what __call__ does, without
        # detecting five times: hands at four scales are slow)
        poses = detector.detect_poses(image, include_hand=True, include_face=True)
        for module, (body, hands, face) in MODULES.items():
            out[f"stub_{module}_{i}"] = draw_poses(poses, *size, draw_body=body, draw_hand=hands, draw_face=face)
        out[f"stub_json_{i}"] = np.array(json.dumps(pose_dict(poses, *size)))
        print("stub", i, flush=True)
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(path, **out)
    for key in sorted(out):
        if key.startswith("stub_json"):
            people = json.loads(str(out[key]))["people"]
            print(key, len(people), [sum(v is not None for v in p.values()) for p in people])
        elif key.startswith("candidates"):
            print(key, out[key].shape)


if __name__ == "__main__":
    main()
