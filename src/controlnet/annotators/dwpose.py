"""DWPose (Yang et al. 2023, arXiv 2307.15880): whole-body pose from its two published ONNX files, as A1111's
`dw_openpose_full` (sd-webui-controlnet) and DWPose's own ControlNet annotator run them.

1. People: YOLOX-L (`yolox_l.onnx`) on the picture letterboxed into 640×640 (scaled to fit, grey 114
   right and below); its 8400 grid predictions decoded (centre + grid × stride, exp(size) × stride),
   score = objectness × class; class-wise NMS (IoU 0.45) over scores > 0.1, then the persons (class 0)
   above 0.3. If something was found but no person passed, the whole picture is one box (the
   reference's quirk); if nothing was found at all, nobody.
2. Keypoints: each box widened 1.25×, set to the 288:384 aspect and cut out by an affine warp; the
   crop normalised by ImageNet's mean and std; the RTMPose network (`dw-ll_ucoco_384.onnx`) gives
   133 SimCC rows per axis at twice the resolution; a keypoint is the argmax of each (÷ 2), scored by
   the smaller of the two maxima.
3. OpenPose order: a neck between the shoulders, the 17 COCO body points remapped to OpenPose-18;
   then 6 feet, 68 face and 2×21 hand points. A keypoint scoring below 0.3 is missing; the face gets
   the two eyes appended (70 points, as sd-webui-controlnet pads it). Drawn with the OpenPose drawing.

The picture goes in as given (RGB), as both references feed it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np

from controlnet.errors import InputError

from .local_models import resolve_weight_file
from .onnx_net import BACKENDS, load_onnx
from .openpose import Person, draw, poses_json, weight_folder
from .registry import Param, register

DETECTOR, POSE = "yolox_l.onnx", "dw-ll_ucoco_384.onnx"
DETECT_SIZE = 640
STRIDES = (8, 16, 32)
CLASSES = 80
NMS_IOU, CANDIDATE_SCORE, PERSON_SCORE = 0.45, 0.1, 0.3
POSE_W, POSE_H = 288, 384
SIMCC_SPLIT = 2.0
BOX_PADDING = 1.25
MEAN, STD = np.array([123.675, 116.28, 103.53]), np.array([58.395, 57.12, 57.375])
KEYPOINTS = 133
KEYPOINT_SCORE = 0.3
# OpenPose-18 slot <- COCO-17 slot, after the neck was inserted at 17 (so COCO's own indices hold below 17)
OPENPOSE_FROM_COCO = {1: 17, 2: 6, 3: 8, 4: 10, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 12: 13, 13: 15, 14: 2, 15: 1,
                      16: 4, 17: 3}  # 0 (nose), 5 and 11 keep their slots
BODY, FACE, LEFT_HAND, RIGHT_HAND = slice(0, 18), slice(24, 92), slice(92, 113), slice(113, 134)
EYES = (14, 15)


@dataclass
class Nets:
    detector: object
    pose: object


def letterbox(image: np.ndarray) -> tuple[np.ndarray, float]:
    """(1, 3, 640, 640) float32 0..255: the picture scaled to fit (bilinear), grey 114 right and below; the scale."""
    h, w = image.shape[:2]
    ratio = min(DETECT_SIZE / h, DETECT_SIZE / w)
    canvas = np.full((DETECT_SIZE, DETECT_SIZE, 3), 114, np.uint8)
    size = (int(w * ratio), int(h * ratio))
    canvas[: size[1], : size[0]] = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), ratio


def grid_boxes(raw: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) xyxy boxes in picture pixels and (N, 80) class scores from YOLOX's (1, N, 85) raw output."""
    cells = [np.stack(np.meshgrid(np.arange(DETECT_SIZE // s), np.arange(DETECT_SIZE // s)), 2).reshape(-1, 2)
             for s in STRIDES]
    grid = np.concatenate(cells)
    stride = np.concatenate([np.full((len(c), 1), s) for c, s in zip(cells, STRIDES)])
    pred = raw[0].copy()
    if pred.shape != (len(grid), 5 + CLASSES):
        raise InputError(f"the person detector gave {raw.shape[1:]} predictions where {(len(grid), 5 + CLASSES)} "
                         f"are expected: not YOLOX's 640-px export ({DETECTOR})")
    pred[:, :2] = (pred[:, :2] + grid) * stride
    pred[:, 2:4] = np.exp(pred[:, 2:4]) * stride
    centre, half = pred[:, :2], pred[:, 2:4] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1) / ratio
    return boxes, pred[:, 4:5] * pred[:, 5:]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS, best first; areas count the end pixels (+1), as the reference does."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return keep


def person_boxes(detector, image: np.ndarray) -> np.ndarray | None:
    """(n, 4) person boxes, best first; None when the detector found nothing of any class."""
    x, ratio = letterbox(image)
    boxes, scores = grid_boxes(detector.run(x)[0], ratio)
    if not (scores > CANDIDATE_SCORE).any():
        return None
    person = scores[:, 0]
    candidates = person > CANDIDATE_SCORE  # NMS is per class: only the persons' own NMS matters
    boxes, person = boxes[candidates], person[candidates]
    keep = [i for i in nms(boxes, person, NMS_IOU) if person[i] > PERSON_SCORE]
    return boxes[keep].reshape(-1, 4).astype(np.float64)


def crop_person(image: np.ndarray, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network input (3, 384, 288) of one box, and the crop's centre and (w, h) in picture pixels."""
    x1, y1, x2, y2 = np.asarray(box, np.float64)
    centre = np.array([x1 + x2, y1 + y2]) * 0.5
    w, h = (x2 - x1) * BOX_PADDING, (y2 - y1) * BOX_PADDING
    aspect = POSE_W / POSE_H
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    warp = _warp_matrix(centre, scale[0])
    crop = cv2.warpAffine(image, warp, (POSE_W, POSE_H), flags=cv2.INTER_LINEAR)
    return ((crop - MEAN) / STD).transpose(2, 0, 1), centre, scale


def _warp_matrix(centre: np.ndarray, width: float) -> np.ndarray:
    """The affine map taking the crop's centre and top-middle (and the point 90° from them) to the input's."""
    src = np.zeros((3, 2), np.float32)
    src[0] = centre
    src[1] = centre + np.array([0.0, -0.5 * width])
    dst = np.zeros((3, 2), np.float32)
    dst[0] = [POSE_W * 0.5, POSE_H * 0.5]
    dst[1] = np.array([POSE_W * 0.5, POSE_H * 0.5]) + np.array([0.0, -0.5 * POSE_W])
    for points in (src, dst):
        d = points[0] - points[1]
        points[2] = points[1] + np.r_[-d[1], d[0]]
    return cv2.getAffineTransform(src, dst)


def simcc_decode(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, 2) keypoints in input pixels and (K,) scores from (K, 576) and (K, 768) SimCC rows."""
    locs = np.stack([simcc_x.argmax(axis=1), simcc_y.argmax(axis=1)], axis=-1).astype(np.float32)
    scores = np.minimum(simcc_x.max(axis=1), simcc_y.max(axis=1))
    locs[scores <= 0.0] = -1
    return locs / SIMCC_SPLIT, scores


def whole_body(pose, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 133, 2) keypoints in picture pixels and (n, 133) scores, one row per box."""
    points, scores = [], []
    for box in boxes:
        x, centre, scale = crop_person(image, box)
        outputs = pose.run(x[None])
        simcc_x, simcc_y = sorted(outputs, key=lambda o: o.shape[-1])
        if simcc_x.shape[1:] != (KEYPOINTS, POSE_W * 2) or simcc_y.shape[1:] != (KEYPOINTS, POSE_H * 2):
            raise InputError(f"the pose network gave {[o.shape for o in outputs]} where (1, 133, 576) and "
                             f"(1, 133, 768) are expected: not DWPose's 384×288 export ({POSE})")
        k, s = simcc_decode(simcc_x[0], simcc_y[0])
        points.append(k / np.array([POSE_W, POSE_H]) * scale + centre - scale / 2)
        scores.append(s)
    return np.array(points).reshape(-1, KEYPOINTS, 2), np.array(scores).reshape(-1, KEYPOINTS)


def to_openpose_order(points: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(n, 134, 3) x, y, score: a neck (mean of the shoulders, score 1 if both exceed 0.3) inserted, body remapped."""
    info = np.concatenate([points, scores[..., None]], axis=-1)
    neck = info[:, [5, 6]].mean(axis=1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > KEYPOINT_SCORE, info[:, 6, 2] > KEYPOINT_SCORE)
    out = np.insert(info, 17, neck, axis=1)
    slots = list(OPENPOSE_FROM_COCO)
    out[:, slots] = out[:, [OPENPOSE_FROM_COCO[s] for s in slots]]
    return out


def _part(info: np.ndarray) -> np.ndarray | None:
    """Pixel points of one part, NaN below the score threshold; None when none passes."""
    kept = info[:, 2] >= KEYPOINT_SCORE
    if not kept.any():
        return None
    return np.where(kept[:, None], info[:, :2], np.nan)


def people_from(info: np.ndarray, height: int, width: int) -> list[Person]:
    """OpenPose-ordered keypoints as Persons (normalised to the picture), parts as sd-webui-controlnet keeps them."""
    size = np.array([float(width), float(height)])
    out = []
    for person in info:
        body = _part(person[BODY])
        body = np.full((18, 2), np.nan) if body is None else body
        face = _part(person[FACE])
        if face is not None:
            face = np.concatenate([face, body[list(EYES)]])
        hands = [_part(person[part]) for part in (LEFT_HAND, RIGHT_HAND)]
        kept = person[BODY][:, 2] >= KEYPOINT_SCORE
        out.append(Person(body / size, float(person[BODY][kept, 2].sum()), int(kept.sum()),
                          *[None if p is None else p / size for p in (*hands, face)]))
    return out


def detect(image_rgb: np.ndarray, nets: Nets) -> list[Person]:
    """Everyone in an RGB uint8 picture: body, hands and face (DWPose's six foot points are not used)."""
    image = np.ascontiguousarray(image_rgb[..., :3])
    boxes = person_boxes(nets.detector, image)
    if boxes is None:
        return []
    if len(boxes) == 0:
        boxes = np.array([[0.0, 0.0, image.shape[1], image.shape[0]]])
    points, scores = whole_body(nets.pose, image, boxes)
    return people_from(to_openpose_order(points, scores), *image.shape[:2])


def load_nets(model, backend: str = "opencv") -> Nets:
    """Both files from the folder `model` (or the folder of one of them)."""
    folder = weight_folder(model) if model is not None else None
    det = resolve_weight_file(folder, DETECTOR, "dw_openpose_full's person detector")
    pose = resolve_weight_file(folder, POSE, "dw_openpose_full's pose network")
    return Nets(load_onnx(det, "YOLOX person detector", 1, backend), load_onnx(pose, "DWPose pose network", 2, backend))


_LAST: list = []  # the last detection: (picture digest, nets, people), so a map and its JSON cost one run


def people(image: np.ndarray, model, backend: str = "opencv") -> list[Person]:
    nets = load_nets(model, backend)
    digest = (image.shape, hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest())
    if _LAST and _LAST[0][0] == digest and _LAST[0][1] == nets:
        return _LAST[0][2]
    found = detect(image, nets)
    _LAST[:] = [(digest, nets, found)]
    return found


def dwpose_json(image: np.ndarray, model, backend: str = "opencv") -> dict:
    """A1111's pose JSON of what `dw_openpose_full` draws (normalised coordinates, as the openpose modules write)."""
    return poses_json(people(image, model, backend), *image.shape[:2])


FEEDS = "openpose (control_v11p_sd15_openpose, diffusers *-openpose; DWPose maps read as OpenPose's)"


@register("dw_openpose_full", feeds=FEEDS, kind="label", learned=True, weights=(DETECTOR, POSE),
          summary="DWPose whole body (yolox_l.onnx + dw-ll_ucoco_384.onnx): body, hands, face drawn as OpenPose",
          needs=f"{DETECTOR} + {POSE} (--param model=FOLDER)",
          params=(Param("model", None, f"folder holding {DETECTOR} and {POSE} (or the path of one of them)",
                        type="path", required=True),
                  Param("backend", "opencv", "what runs the ONNX files: OpenCV's DNN module (as A1111) or onnxruntime",
                        choices=BACKENDS)))
def dw_openpose_full(image: np.ndarray, model: str, backend: str = "opencv") -> np.ndarray:
    h, w = image.shape[:2]
    return draw(people(image, model, backend), h, w, body=True, hands=True, face=True)
