"""CPU time (process time) per 512×512 photo of the OpenPose modules, ours next to controlnet_aux 0.0.10's, same run.

    python benchmarks/openpose_speed.py --aux-python /tmp/auxenv/bin/python [--repeat 2] [--threads 1]

Both sides load the same seeded random weights saved in the published layouts (body_pose_model.pth,
hand_pose_model.pth, facenet.pth). Random weights find nobody, so two cases are timed:
- `openpose`: the real body network and its post-processing (it finds nobody);
- `openpose_full`: the body network's outputs replaced by one synthetic person (this file's
  `OnePerson`, the same on both sides), so the real hand network runs on two hands at its four
  scales and the real face network on one face: the cost of a photo with one person.
controlnet_aux runs in its own environment (`--aux-python`), as a subprocess of this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FILES = ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
# one standing person, arms out, normalised (x, y), COCO-18 order
PERSON = np.array([[0.50, 0.12], [0.50, 0.26], [0.38, 0.26], [0.26, 0.40], [0.18, 0.54], [0.62, 0.26], [0.74, 0.40],
                   [0.82, 0.54], [0.44, 0.56], [0.43, 0.75], [0.43, 0.94], [0.56, 0.56], [0.57, 0.75], [0.57, 0.94],
                   [0.47, 0.09], [0.53, 0.09], [0.44, 0.11], [0.56, 0.11]])
LINKS = [(1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17), (2, 16), (5, 17)]
PAF_X = [12, 20, 14, 16, 22, 24, 0, 2, 4, 6, 8, 10, 28, 30, 34, 32, 36, 18, 26]


class OnePerson(torch.nn.Module):
    """Stands in for the body network: PAFs and heatmaps of PERSON on the input's 1/8 grid."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        h, w = x.shape[2] // 8, x.shape[3] // 8
        ys, xs = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
        heat, pafs = np.zeros((19, h, w), np.float32), np.zeros((38, h, w), np.float32)
        points = PERSON * [w, h]
        for i, (px, py) in enumerate(points):
            heat[i] = np.exp(-((xs - px) ** 2 + (ys - py) ** 2) / 1.28)
        for (a, b), c in zip(LINKS, PAF_X):
            d = points[b] - points[a]
            length = max(float(np.hypot(*d)), 1e-6)
            t = np.clip(((xs - points[a][0]) * d[0] + (ys - points[a][1]) * d[1]) / length**2, 0, 1)
            near = np.hypot(xs - points[a][0] - t * d[0], ys - points[a][1] - t * d[1]) < 1.2
            pafs[c][near], pafs[c + 1][near] = d[0] / length, d[1] / length
        heat[18] = 1 - heat[:18].max(axis=0)
        return torch.from_numpy(pafs)[None], torch.from_numpy(heat)[None]


def save_weights(folder: Path) -> None:
    from controlnet.annotators import openpose_network as n

    torch.manual_seed(0)
    for name, net in zip(FILES, (n.BodyPoseNet(), n.HandPoseNet(), n.FaceNet())):
        torch.save(net.state_dict(), folder / name)


def photo() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512×512 RGB


def timed(fn, repeat: int, warm_up: bool = True) -> float:
    if warm_up:  # loading and first-call caches (the full case runs after the body case: already warm)
        fn()
    start = time.process_time()  # CPU time: a shared machine's load does not count (one thread, see main)
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat


def ours(folder: Path, repeat: int, full_case: bool = True) -> dict:
    from controlnet.annotators import annotate, openpose_modules
    from controlnet.annotators.openpose import detect_people, draw

    image = photo()
    annotate("openpose", image, 512, model=folder)  # the module runs (and loads the file)
    body_net, hand, face = (openpose_modules.load_openpose(folder, f) for f in FILES)
    # detect_people directly: annotate() would reuse its last detection of the same image
    body = timed(lambda: draw(detect_people(image, body_net), 512, 512), repeat)
    if not full_case:
        return {"openpose": body}
    found = detect_people(image, OnePerson(), hand, face)
    assert len(found) == 1 and found[0].left_hand is not None and found[0].face is not None
    full = timed(lambda: draw(detect_people(image, OnePerson(), hand, face), 512, 512, True, True, True), repeat,
                 warm_up=False)
    return {"openpose": body, "openpose_full": full}


def aux(folder: Path, repeat: int, full_case: bool = True) -> dict:
    from controlnet_aux.open_pose import OpenposeDetector

    image = photo()
    detector = OpenposeDetector.from_pretrained(str(folder))
    common = {"detect_resolution": 512, "image_resolution": 512, "output_type": "np"}
    body = timed(lambda: detector(image, **common), repeat)
    if not full_case:
        return {"openpose": body}
    detector.body_estimation.model = OnePerson()
    assert len(detector.detect_poses(image, include_hand=True, include_face=True)) == 1
    full = timed(lambda: detector(image, include_hand=True, include_face=True, **common), repeat, warm_up=False)
    return {"openpose": body, "openpose_full": full}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="python of an environment with controlnet-aux==0.0.10")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--body-only", action="store_true", help="time only the `openpose` case (minutes less)")
    parser.add_argument("--side", choices=["ours", "aux"], default="ours", help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import cv2

    cv2.setNumThreads(args.threads)
    if args.side == "aux":  # the subprocess in controlnet_aux's environment
        print(json.dumps(aux(args.weights, args.repeat, not args.body_only)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_weights(Path(tmp))
        times = ours(Path(tmp), args.repeat, not args.body_only)
        theirs = {}
        if args.aux_python:
            out = subprocess.run([args.aux_python, __file__, "--side", "aux", "--weights", tmp, "--repeat",
                                  str(args.repeat), "--threads", str(args.threads)] + ["--body-only"] * args.body_only, capture_output=True, text=True,
                                 check=True)
            theirs = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'module':<15} {'ours s':>8} {'controlnet_aux s':>17} {'ratio':>6}   (512×512, {args.threads} thread(s))")
    for name, t in times.items():
        ref = theirs.get(name)
        print(f"{name:<15} {t:>8.2f} {ref if ref is None else f'{ref:.2f}':>17} "
              f"{'' if ref is None else f'{t / ref:.2f}':>6}")


if __name__ == "__main__":
    sys.exit(main())
