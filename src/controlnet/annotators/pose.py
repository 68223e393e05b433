"""Pose, hands and face from mediapipe's bundled models, drawn for OpenPose-trained checkpoints.

mediapipe 0.10.21 (the `pose` extra) ships BlazePose (33 points, single person), Hands (21 points)
and FaceMesh (478 points) inside its wheel, so this runs offline. BlazePose is remapped to the
OpenPose-18 body (neck = mid-shoulders), hands map 1:1, and 68 FaceMesh points + 2 pupils stand in
for OpenPose's 70 face points. Expect some distribution shift against OpenPose-detected training
maps: the A1111 names (openpose, openpose_full, ...) run the real OpenPose from its weight files
(openpose_modules.py). mediapipe >= 0.10.30 ships no models and no `mp.solutions`, so it cannot be used here.
"""

from __future__ import annotations

import functools

import numpy as np

from controlnet.errors import InputError

from .openpose_draw import draw_body, draw_faces, draw_hands
from .registry import Param, register

INSTALL = "pip install 'controlnet-pytorch[pose]' (mediapipe==0.10.21, Python <= 3.12)"
# OpenPose-18 index -> BlazePose index (neck, index 1, is the mean of both shoulders)
BLAZEPOSE_FOR_OPENPOSE = [0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7]
# FaceMesh indices standing in for the 68 dlib/OpenPose face points: jaw 17, brows 5+5, nose 4+5,
# eyes 6+6, outer lips 12, inner lips 8; then the two refined pupils
FACEMESH_FOR_OPENPOSE = [
    127, 234, 93, 132, 58, 172, 136, 150, 152, 379, 365, 397, 288, 361, 323, 454, 356,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
    468, 473,
]


def mediapipe_solutions():
    """`mediapipe.solutions`, or a one-line error saying how to get a version that has it."""
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise InputError(f"this annotator needs mediapipe, an optional extra: {INSTALL}") from exc
    solutions = getattr(mp, "solutions", None)
    if solutions is None:
        version = getattr(mp, "__version__", "?")
        raise InputError(f"mediapipe {version} has no bundled models (mp.solutions went in 0.10.30): {INSTALL}")
    return solutions


@functools.lru_cache(maxsize=4)
def _detector(kind: str, confidence: float):
    solutions = mediapipe_solutions()
    if kind == "pose":  # model_complexity=1 is the one bundled; 0 and 2 would try to download
        return solutions.pose.Pose(static_image_mode=True, model_complexity=1, min_detection_confidence=confidence)
    if kind == "hands":
        return solutions.hands.Hands(
            static_image_mode=True, max_num_hands=2, model_complexity=1, min_detection_confidence=confidence
        )
    return solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=confidence
    )


def _pixels(landmarks, w: int, h: int, min_visibility: float = 0.0) -> np.ndarray:
    """Landmarks -> (N, 2) pixel coordinates, NaN where off-image or not visible enough."""
    points = np.array([[p.x * w, p.y * h] for p in landmarks.landmark], dtype=np.float32)
    visible = np.array([getattr(p, "visibility", 1.0) or 1.0 for p in landmarks.landmark]) >= min_visibility
    inside = (points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h)
    points[~(visible & inside)] = np.nan
    return points


def detect_body(image: np.ndarray, confidence: float, min_visibility: float) -> list[np.ndarray]:
    """[18×2] OpenPose-ordered body in pixels (mediapipe finds at most one person), or []."""
    h, w = image.shape[:2]
    result = _detector("pose", confidence).process(image)
    if result.pose_landmarks is None:
        return []
    blaze = _pixels(result.pose_landmarks, w, h, min_visibility)
    body = np.full((18, 2), np.nan, np.float32)
    for op, bp in enumerate(BLAZEPOSE_FOR_OPENPOSE):
        if bp is not None:
            body[op] = blaze[bp]
    body[1] = (blaze[11] + blaze[12]) / 2  # NaN unless both shoulders are there
    return [body]


def detect_hands(image: np.ndarray, confidence: float) -> list[np.ndarray]:
    h, w = image.shape[:2]
    result = _detector("hands", confidence).process(image)
    return [_pixels(hand, w, h) for hand in (result.multi_hand_landmarks or [])]


def detect_faces(image: np.ndarray, confidence: float) -> list:
    """Raw FaceMesh landmark lists (478 points each with refine_landmarks)."""
    return list(_detector("face", confidence).process(image).multi_face_landmarks or [])


@register(
    "pose",
    feeds="openpose (control_sd15_openpose, control_v11p_sd15_openpose, diffusers *-openpose)",
    summary="mediapipe pose (+hands, +face) drawn as an OpenPose-18 skeleton on black",
    kind="label",
    learned=True,
    needs="mediapipe==0.10.21 (extra 'pose')",
    requires=mediapipe_solutions,
    params=(
        Param("hands", False, "also draw hands (A1111 openpose_hand; both = openpose_full)"),
        Param("face", False, "also draw face points (A1111 openpose_face)"),
        Param("min_confidence", 0.5, "mediapipe detection confidence", minimum=0.0, maximum=1.0),
        Param("min_visibility", 0.5, "body keypoints less visible than this are left out", minimum=0.0, maximum=1.0),
    ),
    aliases=("pose_mediapipe",),
)
def pose(image: np.ndarray, hands: bool, face: bool, min_confidence: float, min_visibility: float) -> np.ndarray:
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    canvas = np.zeros((h, w, 3), np.uint8)
    draw_body(canvas, detect_body(image, min_confidence, min_visibility))
    if hands:
        draw_hands(canvas, detect_hands(image, min_confidence))
    if face:
        faces = [_pixels(f, w, h)[FACEMESH_FOR_OPENPOSE] for f in detect_faces(image, min_confidence)]
        draw_faces(canvas, faces)
    return canvas
