"""Drawing keypoints the way OpenPose-trained ControlNets saw them (ControlNet 1.1 `openpose/util.py`).

Black canvas; 18 COCO body keypoints; 17 limbs as filled ellipses (half-width 4 px) at 60 % of the
limb colour; joints as radius-4 discs in full colour. Hands: 20 bones as 2-px lines in HSV-rainbow
colours, joints as radius-4 discs (0, 0, 255). Face: white radius-3 dots. Colours are listed in
the order the model reads them (RGB). Each person is drawn whole (body, hands, face) before the
next, as ControlNet 1.1's `draw_poses` and controlnet_aux do.

Keypoints are given in pixels as an (N, 2) float array; rows with NaN are missing.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# OpenPose-18 order: nose, neck, r-shoulder, r-elbow, r-wrist, l-shoulder, l-elbow, l-wrist, r-hip,
# r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear, l-ear ("r" = the person's right)
BODY_COLORS = [
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
]
# limbs as 0-based keypoint pairs (OpenPose's 1-based limbSeq minus one); limb i uses BODY_COLORS[i]
BODY_LIMBS = [
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12),
    (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
]
HAND_BONES = [
    (0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (0, 9), (9, 10), (10, 11),
    (11, 12), (0, 13), (13, 14), (14, 15), (15, 16), (0, 17), (17, 18), (18, 19), (19, 20),
]
# hsv_to_rgb(i / 20, 1, 1) * 255 as cv2 rounds the float colour the reference passes (76.5 -> 77)
HAND_BONE_COLORS = [
    (255, 0, 0), (255, 77, 0), (255, 153, 0), (255, 229, 0), (204, 255, 0), (128, 255, 0), (51, 255, 0),
    (0, 255, 25), (0, 255, 102), (0, 255, 179), (0, 255, 255), (0, 178, 255), (0, 102, 255), (0, 25, 255),
    (51, 0, 255), (128, 0, 255), (204, 0, 255), (255, 0, 230), (255, 0, 153), (255, 0, 77),
]
HAND_JOINT_COLOR = (0, 0, 255)
FACE_COLOR = (255, 255, 255)
STICK_WIDTH = 4


def _present(points: np.ndarray, i: int) -> bool:
    return bool(np.isfinite(points[i]).all())


def draw_body(canvas: np.ndarray, bodies: list[np.ndarray]) -> np.ndarray:
    """Each 18×2 body in turn: limbs at 60 % colour, then joints in full colour; in place."""
    for points in bodies:
        for (a, b), color in zip(BODY_LIMBS, BODY_COLORS):
            if _present(points, a) and _present(points, b):
                _fill_limb(canvas, points[a], points[b], tuple(int(c * 0.6) for c in color))
        for i, color in enumerate(BODY_COLORS):
            if _present(points, i):
                cv2.circle(canvas, (int(points[i][0]), int(points[i][1])), 4, color, thickness=-1)
    return canvas


def _fill_limb(canvas: np.ndarray, p, q, color) -> None:
    """An ellipse from p to q, STICK_WIDTH px half-thick; float64 arithmetic in the reference's order."""
    (x1, y1), (x2, y2) = np.asarray(p, np.float64), np.asarray(q, np.float64)
    length = ((y1 - y2) ** 2 + (x1 - x2) ** 2) ** 0.5
    angle = math.degrees(math.atan2(y1 - y2, x1 - x2))
    center = (int((x1 + x2) / 2), int((y1 + y2) / 2))
    polygon = cv2.ellipse2Poly(center, (int(length / 2), STICK_WIDTH), int(angle), 0, 360, 1)
    cv2.fillConvexPoly(canvas, polygon, color)


def draw_hands(canvas: np.ndarray, hands: list[np.ndarray]) -> np.ndarray:
    """21-point hands (same numbering as OpenPose and mediapipe), in place."""
    for points in hands:
        for (a, b), color in zip(HAND_BONES, HAND_BONE_COLORS):
            if _present(points, a) and _present(points, b):
                p, q = points[a].astype(int), points[b].astype(int)
                cv2.line(canvas, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), color, thickness=2)
        for i in range(len(points)):
            if _present(points, i):
                cv2.circle(canvas, (int(points[i][0]), int(points[i][1])), 4, HAND_JOINT_COLOR, thickness=-1)
    return canvas


def draw_faces(canvas: np.ndarray, faces: list[np.ndarray]) -> np.ndarray:
    for points in faces:
        for x, y in points[np.isfinite(points).all(axis=1)]:
            cv2.circle(canvas, (int(x), int(y)), 3, FACE_COLOR, thickness=-1)
    return canvas


def draw_people(canvas: np.ndarray, people, body: bool = True, hands: bool = True, face: bool = True) -> np.ndarray:
    """Draw (body, [hands], face-or-None) per person, one whole person after the other; in place."""
    for person_body, person_hands, person_face in people:
        if body:
            draw_body(canvas, [person_body])
        if hands:
            draw_hands(canvas, [h for h in person_hands if h is not None])
        if face and person_face is not None:
            draw_faces(canvas, [person_face])
    return canvas
