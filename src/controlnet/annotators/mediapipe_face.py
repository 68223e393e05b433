"""mediapipe face mesh drawn like controlnet_aux's `MediapipeFaceDetector` (controlnet_sd21_laion_face_v2).

Coloured face-oval, eye, eyebrow and lip contours (2 px) plus pupil squares, for faces of at least
64 px. The colours are the ones controlnet_aux passes to mediapipe's drawing utils (which draw
into a BGR-ordered image; it flips to RGB at the end, and so do we).
"""

from __future__ import annotations

import functools

import numpy as np

from .pose import mediapipe_solutions
from .registry import Param, register

MIN_FACE_PIXELS = 64
# (B, G, R) as written in controlnet_aux; the final flip makes them RGB
HEAD, MOUTH = (10, 200, 10), (10, 180, 10)
RIGHT_EYE, RIGHT_BROW, RIGHT_IRIS = (10, 200, 180), (10, 220, 180), (10, 200, 250)
LEFT_EYE, LEFT_BROW, LEFT_IRIS = (180, 200, 10), (180, 220, 10), (250, 200, 10)


@functools.lru_cache(maxsize=2)
def _face_mesh(max_faces: int, confidence: float):
    return mediapipe_solutions().face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=max_faces, refine_landmarks=True, min_detection_confidence=confidence
    )


def _connection_specs(solutions) -> dict:
    """{(a, b): DrawingSpec} exactly as controlnet_aux builds it (irises are drawn separately)."""
    mesh, spec = solutions.face_mesh, solutions.drawing_styles.DrawingSpec
    groups = [
        (mesh.FACEMESH_FACE_OVAL, HEAD), (mesh.FACEMESH_LEFT_EYE, LEFT_EYE),
        (mesh.FACEMESH_LEFT_EYEBROW, LEFT_BROW), (mesh.FACEMESH_RIGHT_EYE, RIGHT_EYE),
        (mesh.FACEMESH_RIGHT_EYEBROW, RIGHT_BROW), (mesh.FACEMESH_LIPS, MOUTH),
    ]
    return {edge: spec(color=colour, thickness=2, circle_radius=1) for edges, colour in groups for edge in edges}


@register(
    "mediapipe_face",
    feeds="controlnet_sd21_laion_face_v2 (SD 2.1 face checkpoint)",
    summary="mediapipe face mesh contours and pupils in controlnet_aux's colours",
    kind="label",
    learned=True,
    needs="mediapipe==0.10.21 (extra 'pose')",
    requires=mediapipe_solutions,
    params=(
        Param("max_faces", 1, "most faces to draw", minimum=1, maximum=50),
        Param("min_confidence", 0.5, "mediapipe detection confidence", minimum=0.0, maximum=1.0),
    ),
)
def mediapipe_face(image: np.ndarray, max_faces: int, min_confidence: float) -> np.ndarray:
    solutions = mediapipe_solutions()
    h, w = image.shape[:2]
    found = _face_mesh(max_faces, min_confidence).process(np.ascontiguousarray(image)).multi_face_landmarks or []
    canvas = np.zeros((h, w, 3), np.uint8)  # drawn in BGR like controlnet_aux, flipped at the end
    specs = _connection_specs(solutions)
    for face in found:
        points = np.array([[p.x * w, p.y * h] for p in face.landmark], np.float32)
        if (points.max(axis=0) - points.min(axis=0)).min() < MIN_FACE_PIXELS:
            continue
        solutions.drawing_utils.draw_landmarks(
            canvas, face, connections=specs.keys(), landmark_drawing_spec=None, connection_drawing_spec=specs
        )
        for index, colour in ((468, RIGHT_IRIS), (473, LEFT_IRIS)):
            x, y = int(points[index][0]), int(points[index][1])
            if 0 <= x < w and 0 <= y < h:
                canvas[max(0, y - 2) : y + 2, max(0, x - 2) : x + 2] = colour
    return np.ascontiguousarray(canvas[:, :, ::-1])
