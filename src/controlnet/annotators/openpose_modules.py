"""A1111's OpenPose modules (openpose, openpose_hand, openpose_face, openpose_faceonly, openpose_full)
from the published `body_pose_model.pth`, `hand_pose_model.pth` and `facenet.pth`, kept in one folder
(as lllyasviel/Annotators and A1111's `annotator/downloads/openpose/` hold them).

The mediapipe stand-in stays available as `pose`; the openpose names run the real networks.
"""

from __future__ import annotations

import hashlib

import numpy as np

from controlnet.errors import InputError

from .local_models import load_network, on_device
from .openpose import detect_people, draw, poses_json, weight_folder
from .registry import Param, register

BODY, HAND, FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"
FEEDS = "openpose (control_sd15_openpose, control_v11p_sd15_openpose, diffusers *-openpose)"
# module -> (draw body, hands, face)
MODULES = {"openpose": (True, False, False), "openpose_hand": (True, True, False), "openpose_face": (True, False, True),
           "openpose_faceonly": (False, False, True), "openpose_full": (True, True, True)}


def _builder(name: str):
    from . import openpose_network as n

    return {BODY: n.BodyPoseNet, HAND: n.HandPoseNet, FACE: n.FaceNet}[name]


WHAT = {BODY: "body pose", HAND: "hand pose", FACE: "face"}


def load_openpose(model, name: str):
    """One of the three networks from the folder `model` (or the folder of the file `model`), strictly loaded."""
    return load_network(weight_folder(model), name, f"{WHAT[name]} ({name})", _builder(name))


def files_for(module: str) -> list[str]:
    """The weight files a module needs (the body always: hands and face are found from it)."""
    _, hands, face = MODULES[module]
    return [BODY] + [HAND] * hands + [FACE] * face


_LAST: list = []  # the last detection: (image digest, networks, people), so a map and its JSON cost one run


def people(image: np.ndarray, model, hands: bool, face: bool):
    """Everyone found in an RGB uint8 image, hands and faces as asked."""
    nets = (load_openpose(model, BODY), load_openpose(model, HAND) if hands else None,
            load_openpose(model, FACE) if face else None)
    digest = (image.shape, hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())
    if _LAST and _LAST[0][0] == digest and all(a is b for a, b in zip(_LAST[0][1], nets)):
        return _LAST[0][2]
    found = detect_people(image, *nets)
    _LAST[:] = [(digest, nets, found)]
    return found


def openpose_json(image: np.ndarray, model, module: str = "openpose_full") -> dict:
    """A1111's pose JSON (`people`, `canvas_width`, `canvas_height`) for what `module` detects, at the image's size."""
    _, hands, face = MODULES[module]
    return poses_json(people(image, model, hands, face), *image.shape[:2])


JSON_MODULES = (*MODULES, "dw_openpose_full")  # the modules that detect people, so have a pose JSON


def check_json_module(module: str) -> None:
    """Only the pose modules detect people: an InputError for any other name."""
    if module not in JSON_MODULES:
        raise InputError(f"the OpenPose JSON comes from the openpose modules ({', '.join(JSON_MODULES)}), not {module!r}")


def detect_json(module: str, image, resolution: int, model, device=None, **options) -> dict:
    """The JSON of what `annotate(module, image, resolution, model=model, device=device, **options)` draws:
    same detect size, same run (`options`: DWPose's backend)."""
    from .image import resize_short_side, to_rgb

    check_json_module(module)
    image = resize_short_side(to_rgb(image), resolution)
    with on_device(device):
        if module == "dw_openpose_full":
            from .dwpose import dwpose_json

            return dwpose_json(image, model, **options)
        return openpose_json(image, model, module)


def _register(module: str, summary: str):
    body, hands, face = MODULES[module]
    needs = " + ".join(files_for(module))

    @register(module, feeds=FEEDS, summary=summary, kind="label", learned=True, needs=f"{needs} (--param model=FOLDER)",
              weights=tuple(files_for(module)),
              params=(Param("model", None, f"folder holding {needs} (or the path of one of them)", type="path",
                            required=True),))
    def run(image: np.ndarray, model: str) -> np.ndarray:
        h, w = image.shape[:2]
        return draw(people(image, model, hands, face), h, w, body=body, hands=hands, face=face)

    return run


openpose = _register("openpose", "OpenPose body (body_pose_model.pth): 18-point skeletons of everyone, on black")
openpose_hand = _register("openpose_hand", "OpenPose body and hands (+ hand_pose_model.pth)")
openpose_face = _register("openpose_face", "OpenPose body and face points (+ facenet.pth)")
openpose_faceonly = _register("openpose_faceonly", "OpenPose face points only (the body finds the faces)")
openpose_full = _register("openpose_full", "OpenPose body, hands and face (all three files)")
