"""Seeded inputs of the OpenPose equality tests, shared by the tests and by make_openpose_reference.py.

Random weights find nobody, so two kinds of runs are compared with controlnet_aux 0.0.10:
- the published networks with seeded random weights: raw outputs, and the body's heatmap peaks;
- the whole detector with the networks replaced by stubs whose outputs are drawn here, in numpy,
  from the input's size only: two people and a stray arm for the body (so PAF matching, merging
  and pruning all run), hand and face maps with blobs (so hand boxes, the multi-scale average, the
  blob choice, face boxes and the face-map skipping all run, and everything is drawn).
"""

from __future__ import annotations

import numpy as np
import torch
from pidinet_inputs import picture  # noqa: F401  (the same seeded picture generator)

WEIGHT_SEEDS = {"body_pose_model.pth": 31, "hand_pose_model.pth": 32, "facenet.pth": 33}
PICTURE_SEEDS = (717, 828, 939)
PICTURE_SIZES = ((256, 384), (384, 256), (320, 320))  # (h, w): multiples of 64, the detector runs at the image size
# the last conv of each network is scaled down so outputs stay near 1 (float32 rounding differences between
# torch versions grow with the magnitude); the body's heatmaps still have hundreds of peaks above 0.1
OUTPUT_GAIN = {"body_pose_model.pth": ("Mconv7_stage6_L2", 0.5), "hand_pose_model.pth": ("Mconv7_stage6", 0.5),
               "facenet.pth": ("Mconv7_stage6", 0.5)}

# COCO-18 order; 19 links as OpenPose assembles people (the 17 drawn limbs, then ear-shoulder)
LINKS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17)]
PAF_CHANNELS = [(12, 13), (20, 21), (14, 15), (16, 17), (22, 23), (24, 25), (0, 1), (2, 3), (4, 5), (6, 7), (8, 9),
                (10, 11), (28, 29), (30, 31), (34, 35), (32, 33), (36, 37), (18, 19), (26, 27)]
# a standing person in a unit box (x, y), arms out; shifted and scaled per person
SKELETON = np.array([[0.50, 0.10], [0.50, 0.22], [0.36, 0.22], [0.22, 0.36], [0.14, 0.50], [0.64, 0.22],
                     [0.78, 0.34], [0.88, 0.46], [0.42, 0.55], [0.40, 0.75], [0.40, 0.95], [0.58, 0.55],
                     [0.60, 0.75], [0.60, 0.95], [0.46, 0.07], [0.54, 0.07], [0.42, 0.09], [0.58, 0.09]])


def random_state(shapes: dict[str, tuple[int, ...]], name: str) -> dict[str, torch.Tensor]:
    """Random tensors in sorted key order from one generator: weights N(0, 2/fan in), biases N(0, 0.01)."""
    generator = torch.Generator().manual_seed(WEIGHT_SEEDS[name])
    state = {}
    for key in sorted(shapes):
        values = torch.randn(shapes[key], generator=generator, dtype=torch.float32)
        fan_in = int(np.prod(shapes[key][1:])) if len(shapes[key]) > 1 else 0
        state[key] = values * ((2.0 / fan_in) ** 0.5 if fan_in else 0.01)
    layer, gain = OUTPUT_GAIN[name]
    state[f"{layer}.weight"] = state[f"{layer}.weight"] * gain
    return state


def people(seed: int) -> list[np.ndarray]:
    """Normalised keypoints (18, 2) of two people side by side, jittered by the seed, and a stray arm."""
    rng = np.random.default_rng(seed)
    out = []
    for left in (0.02, 0.52):
        box = SKELETON * [0.44, 0.9] + [left, 0.05]
        out.append(box + rng.normal(0, 0.006, box.shape))
    stray = np.full((18, 2), np.nan)
    stray[[2, 3, 4]] = [[0.9, 0.9], [0.95, 0.95], [0.98, 0.97]]
    out.append(stray)
    return out


def _blobs(points: np.ndarray, h: int, w: int, sigma: float) -> np.ndarray:
    """(len(points), h, w) Gaussian blobs at normalised points (NaN: empty map)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((len(points), h, w), np.float32)
    for i, (x, y) in enumerate(points):
        if np.isfinite(x):
            out[i] = np.exp(-((xs - x * w) ** 2 + (ys - y * h) ** 2) / (2 * sigma**2))
    return out


def body_maps(bodies: list[np.ndarray], h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(PAFs (38, h, w), heatmaps (19, h, w)) float32 on the network's 1/8 grid."""
    heat = np.zeros((19, h, w), np.float32)
    pafs = np.zeros((38, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    for body in bodies:
        heat[:18] = np.maximum(heat[:18], _blobs(body, h, w, 0.8))
        for (a, b), (cx, cy) in zip(LINKS, PAF_CHANNELS):
            if not np.isfinite(body[[a, b]]).all():
                continue
            p, q = body[a] * [w, h], body[b] * [w, h]
            d = q - p
            length = max(float(np.hypot(*d)), 1e-6)
            t = np.clip(((xs - p[0]) * d[0] + (ys - p[1]) * d[1]) / length**2, 0, 1)
            near = np.hypot(xs - (p[0] + t * d[0]), ys - (p[1] + t * d[1])) < 1.2
            pafs[cx][near], pafs[cy][near] = d[0] / length, d[1] / length
    heat[18] = 1 - heat[:18].max(axis=0)
    return pafs, heat


class _Stub(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # detectors look up the device of the first parameter


class StubBody(_Stub):
    """Returns (PAFs, heatmaps) of `people(seed)` on the grid of the input it is given."""

    def __init__(self, seed: int):
        super().__init__()
        self.bodies = people(seed)

    def forward(self, x):
        pafs, heat = body_maps(self.bodies, x.shape[2] // 8, x.shape[3] // 8)
        return torch.from_numpy(pafs)[None], torch.from_numpy(heat)[None]


HAND_POINTS = np.array([[0.5, 0.9]] + [[0.2 + 0.15 * f, 0.75 - 0.14 * j] for f in range(5) for j in range(4)])
HAND_POINTS[7] = np.nan  # one keypoint never found: drawn as missing


class StubHand(_Stub):
    """22 maps: a blob per keypoint (a second, weaker blob for keypoint 3), nothing for keypoint 7."""

    def forward(self, x):
        h, w = x.shape[2] // 8, x.shape[3] // 8
        maps = np.zeros((22, h, w), np.float32)
        maps[:21] = 0.6 * _blobs(HAND_POINTS, h, w, max(h / 24, 0.7))
        maps[3] += 0.3 * _blobs(np.array([[0.85, 0.15]]), h, w, max(h / 24, 0.7))[0]
        return torch.from_numpy(maps)[None]


FACE_POINTS = np.array([[0.5 + 0.3 * np.cos(a), 0.5 + 0.35 * np.sin(a)] for a in np.linspace(0, 6.0, 71)])
FACE_POINTS[::9] = np.nan  # some maps never fire: they are skipped, the rest shift up


class StubFace(_Stub):
    """71 maps at 1/8 of the input, blobs on an ellipse; as FaceNet, a list of stages (`as_list`) or the last."""

    def __init__(self, as_list: bool):
        super().__init__()
        self.as_list = as_list

    def forward(self, x):
        maps = torch.from_numpy(0.8 * _blobs(FACE_POINTS, x.shape[2] // 8, x.shape[3] // 8, 0.9))[None]
        return [maps] if self.as_list else maps


def raw_input(seed: int, size: int) -> torch.Tensor:
    """A network input (1, 3, size, size): a seeded picture as value/256 - 0.5."""
    image = picture(seed, (size, size))
    return torch.from_numpy((image.astype(np.float32) / 256 - 0.5).transpose(2, 0, 1)[None].copy())
