"""OpenPose body, hands and face from the published weight files, as ControlNet 1.1 / controlnet_aux run them.

Body: one scale (the image scaled to 184 px high), heatmap peaks after a σ=3 blur, people assembled
from part affinity fields (CMU's greedy matching, quirks included). Hands: a box from wrist, elbow
and shoulder; the crop seen at 184/368/552/736 px and averaged on a 128-px grid; per keypoint the
strongest blob. Face: a box from nose, eyes and ears; the crop at 384 px; per map the maximum above
0.05. Inputs are fed in BGR as value/256 - 0.5. Keypoints come out normalised to the image size,
the way the drawings and the A1111 pose JSON (`poses_json`) use them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .local_models import device_of
from .openpose_draw import BODY_LIMBS
from .openpose_draw import draw_people as _draw_people

BOX = 368  # the network's training box; the body runs at half of it, hands at 0.5..2 times
BODY_THRESHOLD, PAF_THRESHOLD, HAND_THRESHOLD, FACE_THRESHOLD = 0.1, 0.05, 0.05, 0.05
PAF_SAMPLES = 10
# the 17 drawn limbs, then ear-shoulder links that only help assemble people; PAF channels (x, y) of each
ASSOCIATION_LIMBS = [*BODY_LIMBS, (2, 16), (5, 17)]
PAF_CHANNELS = [(12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
                (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27)]
HAND_GRID = 128
FACE_INPUT = 384


@dataclass
class Person:
    """One person; coordinates normalised to the image (x / width, y / height).

    body: (18, 2) float64, NaN where missing; hands: (21, 2) float32 or None (left = the person's
    left, keypoints 5-7); face: (K, 2) float32 or None, one row per face map that fired.
    """

    body: np.ndarray
    score: float
    parts: int
    left_hand: np.ndarray | None = None
    right_hand: np.ndarray | None = None
    face: np.ndarray | None = None


def resize(x: np.ndarray, height: float, width: float) -> np.ndarray:
    """Area when shrinking, Lanczos otherwise (by the sum of the sides), sizes truncated to int; up to 4 channels."""
    interpolation = cv2.INTER_AREA if (height + width) / (x.shape[0] + x.shape[1]) < 1 else cv2.INTER_LANCZOS4
    size = (int(width), int(height))
    return cv2.resize(x, size, interpolation=interpolation).reshape(size[1], size[0], *x.shape[2:])


def network_input(image_bgr: np.ndarray):
    """Pad right/bottom with grey 128 to a multiple of 8; NCHW float32 value/256 - 0.5, and the padded size."""
    h, w = image_bgr.shape[:2]
    padded = np.pad(image_bgr, ((0, -h % 8), (0, -w % 8), (0, 0)), constant_values=128)
    import torch

    return torch.from_numpy(np.ascontiguousarray((padded.astype(np.float32) / 256 - 0.5).transpose(2, 0, 1)[None]))


def _to_image_grid(maps, size: tuple[int, int], target: tuple[int, int]) -> np.ndarray:
    """(1, C, h/8, w/8) network maps -> (H, W, C): ×8 Lanczos, padding cut off, resized to `target` (h, w).

    The reference resizes channel by channel; OpenCV computes each channel of a multi-channel resize
    the same way, so channels go 4 at a time (its limit for area resizes).
    """
    m = maps[0].float().cpu().numpy().transpose(1, 2, 0)
    out = []
    for c in range(0, m.shape[2], 4):
        group = np.ascontiguousarray(m[:, :, c : c + 4])
        out.append(resize(resize(group, group.shape[0] * 8, group.shape[1] * 8)[: size[0], : size[1]], *target))
    return np.concatenate(out, axis=2)


def body_maps(net, image_bgr: np.ndarray):
    """(heatmaps (H, W, 19), PAFs (H, W, 38)) in float64 at the image size, and the raw network outputs."""
    import torch

    h, w = image_bgr.shape[:2]
    scale = 0.5 * BOX / h
    small = resize(image_bgr, h * scale, w * scale)
    with torch.inference_mode():
        pafs, heat = net(network_input(small).to(device_of(net)))
    size = small.shape[:2]
    maps = [_to_image_grid(m, size, (h, w)).astype(np.float64) for m in (heat, pafs)]
    return maps[0], maps[1], (pafs, heat)


def body_peaks(heatmaps: np.ndarray) -> list[np.ndarray]:
    """Per part of 18: (n, 4) rows x, y, score, id of the local maxima (4-neighbourhood) of the σ=3 blurred map."""
    from scipy.ndimage import gaussian_filter

    peaks, count = [], 0
    for part in range(18):
        raw = heatmaps[:, :, part]
        blurred = np.pad(gaussian_filter(raw, sigma=3), 1)
        centre = blurred[1:-1, 1:-1]
        is_peak = ((centre >= blurred[:-2, 1:-1]) & (centre >= blurred[2:, 1:-1]) & (centre >= blurred[1:-1, :-2])
                   & (centre >= blurred[1:-1, 2:]) & (centre > BODY_THRESHOLD))
        ys, xs = np.nonzero(is_peak)
        ids = np.arange(count, count + len(ys))
        peaks.append(np.stack([xs, ys, raw[ys, xs], ids], axis=1).astype(np.float64).reshape(-1, 4))
        count += len(ys)
    return peaks


def limb_connections(cand_a: np.ndarray, cand_b: np.ndarray, pafs: np.ndarray, channels, image_height: int):
    """(m, 5) rows id_a, id_b, score, i, j: the PAF-scored pairs, best first, each candidate used once."""
    ax, ay, bx, by = cand_a[:, 0, None], cand_a[:, 1, None], cand_b[None, :, 0], cand_b[None, :, 1]
    dx, dy = bx - ax, by - ay
    norm = np.maximum(np.sqrt(dx * dx + dy * dy), 0.001)
    ux, uy = dx / norm, dy / norm
    steps = np.arange(PAF_SAMPLES, dtype=np.float64)
    xs = steps * (dx / (PAF_SAMPLES - 1))[..., None] + ax[..., None]  # np.linspace's arithmetic
    ys = steps * (dy / (PAF_SAMPLES - 1))[..., None] + ay[..., None]
    xs[..., -1], ys[..., -1] = np.broadcast_to(bx, dx.shape), np.broadcast_to(by, dy.shape)
    cols, rows = np.rint(xs).astype(int), np.rint(ys).astype(int)
    along = pafs[rows, cols, channels[0]] * ux[..., None] + pafs[rows, cols, channels[1]] * uy[..., None]
    total = along[..., 0].copy()
    for k in range(1, PAF_SAMPLES):  # summed in order, as the reference's Python sum
        total += along[..., k]
    score = total / PAF_SAMPLES + np.minimum(0.5 * image_height / norm - 1, 0)
    good = ((along > PAF_THRESHOLD).sum(axis=2) > 0.8 * PAF_SAMPLES) & (score > 0)
    pairs = np.argwhere(good)  # i-major, as the reference appends them
    order = np.argsort(-score[good], kind="stable")
    rows_out, used_a, used_b = [], set(), set()
    for i, j in pairs[order]:
        if i in used_a or j in used_b:
            continue
        rows_out.append([cand_a[i, 3], cand_b[j, 3], score[i, j], i, j])
        used_a.add(i)
        used_b.add(j)
        if len(rows_out) >= min(len(cand_a), len(cand_b)):
            break
    return np.array(rows_out, np.float64).reshape(-1, 5)


def assemble_people(peaks: list[np.ndarray], pafs: np.ndarray, image_height: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidates (n, 4), people (p, 20)): per person 18 candidate ids (-1 missing), total score, part count."""
    candidates = np.concatenate(peaks, axis=0)
    people = np.zeros((0, 20))
    for k, ((a, b), channels) in enumerate(zip(ASSOCIATION_LIMBS, PAF_CHANNELS)):
        if len(peaks[a]) == 0 or len(peaks[b]) == 0:
            continue
        for id_a, id_b, score, _, _ in limb_connections(peaks[a], peaks[b], pafs, channels, image_height):
            people = _add_connection(people, candidates, k, a, b, id_a, id_b, score)
    keep = (people[:, -1] >= 4) & (people[:, -2] / np.maximum(people[:, -1], 1e-12) >= 0.4)
    return candidates, people[keep]


def _add_connection(people, candidates, k, a, b, id_a, id_b, score):
    """CMU's rules: extend the person holding either end, merge two disjoint people, or start one."""
    found = [p for p in range(len(people)) if people[p, a] == id_a or people[p, b] == id_b][:2]
    gain = candidates[int(id_b), 2] + score
    if len(found) == 1:
        p = found[0]
        if people[p, b] != id_b:
            people[p, b] = id_b
            people[p, -1] += 1
            people[p, -2] += gain
    elif len(found) == 2:
        p, q = found
        overlap = ((people[p] >= 0).astype(int) + (people[q] >= 0).astype(int))[:-2]
        if not (overlap == 2).any():
            people[p, :-2] += people[q, :-2] + 1
            people[p, -2:] += people[q, -2:]
            people[p, -2] += score
            people = np.delete(people, q, 0)
        else:
            people[p, b] = id_b
            people[p, -1] += 1
            people[p, -2] += gain
    elif k < len(BODY_LIMBS):
        row = -np.ones(20)
        row[a], row[b], row[-1] = id_a, id_b, 2
        row[-2] = candidates[int(id_a), 2] + candidates[int(id_b), 2] + score
        people = np.vstack([people, row])
    return people


def body_keypoints(candidates: np.ndarray, person: np.ndarray) -> np.ndarray:
    """(18, 2) pixel coordinates of one assembled person, NaN where missing."""
    ids = person[:18].astype(int)
    points = np.full((18, 2), np.nan)
    points[ids >= 0] = candidates[ids[ids >= 0], :2]
    return points


def hand_boxes(body: np.ndarray, height: int, width: int) -> list[tuple[int, int, int, bool]]:
    """(x, y, side, is_left) squares around each hand whose shoulder, elbow and wrist were found (OpenPose's rule)."""
    boxes = []
    for shoulder, elbow, wrist, is_left in ((5, 6, 7, True), (2, 3, 4, False)):
        if not np.isfinite(body[[shoulder, elbow, wrist]]).all():
            continue
        (x1, y1), (x2, y2), (x3, y3) = body[shoulder], body[elbow], body[wrist]
        x, y = x3 + 0.33 * (x3 - x2), y3 + 0.33 * (y3 - y2)
        side = 1.5 * max(math.sqrt((x3 - x2) ** 2 + (y3 - y2) ** 2), 0.9 * math.sqrt((x2 - x1) ** 2 + (y2 - y1) ** 2))
        x, y = max(x - side / 2, 0), max(y - side / 2, 0)
        side = min(width - x if x + side > width else side, height - y if y + side > height else side)
        if side >= 20:
            boxes.append((int(x), int(y), int(side), is_left))
    return boxes


def hand_heatmaps(net, crop_bgr: np.ndarray) -> np.ndarray:
    """(128, 128, 22) float64: the crop blurred (σ 0.8), seen at four sizes, maps averaged."""
    import torch

    blurred = cv2.GaussianBlur(crop_bgr, (0, 0), 0.8)
    total = np.zeros((HAND_GRID, HAND_GRID, 22))
    scales = (0.5, 1.0, 1.5, 2.0)
    for side in (s * BOX for s in scales):
        seen = resize(blurred, side, side)
        with torch.inference_mode():
            out = net(network_input(seen).to(device_of(net)))
        total += _to_image_grid(out, seen.shape[:2], (HAND_GRID, HAND_GRID)) / len(scales)
    return total


def hand_peaks(heatmaps: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """(21, 2) int pixel positions in the crop: per keypoint the maximum of its heaviest blob; (0, 0) if none."""
    from scipy.ndimage import gaussian_filter, label

    out = np.zeros((21, 2), int)
    for part in range(21):
        raw = heatmaps[:, :, part].copy()
        labels, count = label(gaussian_filter(raw, sigma=3) > HAND_THRESHOLD, structure=np.ones((3, 3)))
        if count == 0:
            continue
        heaviest = np.argmax([np.sum(raw[labels == i]) for i in range(1, count + 1)]) + 1
        raw[labels != heaviest] = 0
        y, x = np.unravel_index(np.argmax(raw), raw.shape)
        out[part] = int(float(x) * float(crop_size[1]) / HAND_GRID), int(float(y) * float(crop_size[0]) / HAND_GRID)
    return out


def face_box(body: np.ndarray, height: int, width: int) -> tuple[int, int, int] | None:
    """(x, y, side) around the face from nose, eyes and ears (ControlNet 1.1's rule, its edge clipping included)."""
    if not np.isfinite(body[0]).all() or not np.isfinite(body[14:18]).any():
        return None
    x0, y0 = body[0]
    side = 0.0
    for part, factor in ((14, 3.0), (15, 3.0), (16, 1.5), (17, 1.5)):
        if np.isfinite(body[part]).all():
            side = max(side, max(abs(x0 - body[part][0]), abs(y0 - body[part][1])) * factor)
    x, y = max(x0 - side, 0), max(y0 - side, 0)
    side = min(width - x if x + side > width else side * 2, height - y if y + side > height else side * 2)
    return (int(x), int(y), int(side)) if side >= 20 else None


def face_heatmaps(net, crop_bgr: np.ndarray) -> np.ndarray:
    """(71, h, w) float32 at the crop size: the crop at 384 px, last stage's maps resized bilinearly (corners aligned)."""
    import torch
    import torch.nn.functional as F

    h, w = crop_bgr.shape[:2]
    x = torch.from_numpy(resize(crop_bgr, FACE_INPUT, FACE_INPUT)).permute(2, 0, 1) / 256.0 - 0.5
    with torch.inference_mode():
        maps = net(x[None].to(device_of(net)))
        return F.interpolate(maps, (h, w), mode="bilinear", align_corners=True).float().cpu().numpy()[0]


def face_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """(K, 2) int pixel positions: the first maximum of each map that exceeds 0.05 (maps that do not are skipped)."""
    flat = heatmaps.reshape(len(heatmaps), -1)
    fired = flat.max(axis=1) > FACE_THRESHOLD
    index = flat[fired].argmax(axis=1)
    return np.stack([index % heatmaps.shape[2], index // heatmaps.shape[2]], axis=1)


def _normalised(peaks: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    """Crop pixels -> image fractions in float32; a peak at 0 means missing and becomes -1 / size."""
    p = peaks.astype(np.float32)
    p[:, 0] = np.where(p[:, 0] < 1e-6, -1, p[:, 0] + x) / float(width)
    p[:, 1] = np.where(p[:, 1] < 1e-6, -1, p[:, 1] + y) / float(height)
    return p


def detect_people(image_rgb: np.ndarray, body_net, hand_net=None, face_net=None) -> list[Person]:
    """Everyone in the picture; hands when `hand_net` is given, faces when `face_net` is."""
    image = np.ascontiguousarray(image_rgb[:, :, ::-1])
    h, w = image.shape[:2]
    heatmaps, pafs, _ = body_maps(body_net, image)
    candidates, people = assemble_people(body_peaks(heatmaps), pafs, h)
    out = []
    for row in people:
        body = body_keypoints(candidates, row)
        person = Person(body / np.array([float(w), float(h)]), float(row[18]), int(row[19]))
        for x, y, side, is_left in hand_boxes(body, h, w) if hand_net is not None else ():
            crop = image[y : y + side, x : x + side]
            hand = _normalised(hand_peaks(hand_heatmaps(hand_net, crop), crop.shape[:2]), x, y, w, h)
            if is_left:
                person.left_hand = hand
            else:
                person.right_hand = hand
        box = face_box(body, h, w) if face_net is not None else None
        if box is not None:
            x, y, side = box
            peaks = face_peaks(face_heatmaps(face_net, image[y : y + side, x : x + side]))
            person.face = _normalised(peaks, x, y, w, h) if len(peaks) else None
        out.append(person)
    return out


def _pixels(points: np.ndarray | None, width: int, height: int, drop_edge: bool):
    """Normalised points -> pixels as the reference computes them; with `drop_edge`, points whose integer
    pixel is not at least 1 (missing ones are negative) become NaN, as the hand and face drawings skip them."""
    if points is None:
        return None
    px = np.stack([points[:, 0] * width, points[:, 1] * height], axis=1)
    if drop_edge:
        px = px.astype(np.float64)
        with np.errstate(invalid="ignore"):
            px[~((np.trunc(px) > 0.01).all(axis=1))] = np.nan
    return px


def draw(people: list[Person], height: int, width: int, body: bool = True, hands: bool = False, face: bool = False):
    """The condition map: H×W×3 uint8, black background."""
    canvas = np.zeros((height, width, 3), np.uint8)
    drawn = [(_pixels(p.body, float(width), float(height), False),
              [_pixels(p.left_hand, width, height, True), _pixels(p.right_hand, width, height, True)],
              _pixels(p.face, width, height, True)) for p in people]
    return _draw_people(canvas, drawn, body=body, hands=hands, face=face)


def poses_json(people: list[Person], height: int, width: int) -> dict:
    """The OpenPose JSON that A1111's ControlNet returns and its pose editor reads (normalised coordinates)."""

    def flat(points):
        if points is None or len(points) == 0:
            return None
        return [v for x, y in points for v in ((0.0, 0.0, 0.0) if np.isnan(x) else (float(x), float(y), 1.0))]

    return {"people": [{"pose_keypoints_2d": flat(p.body), "face_keypoints_2d": flat(p.face),
                        "hand_left_keypoints_2d": flat(p.left_hand), "hand_right_keypoints_2d": flat(p.right_hand)}
                       for p in people],
            "canvas_height": int(height), "canvas_width": int(width)}


def weight_folder(given) -> Path:
    """The folder of the OpenPose files: the folder given, or the folder of the file given."""
    path = Path(given).expanduser()
    return path if path.is_dir() or not path.suffix else path.parent
