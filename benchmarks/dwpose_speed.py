"""CPU time (process time) per 512×512 photo of `dw_openpose_full`, ours next to A1111's (sd-webui-controlnet's
ONNX pipeline), same run, same OpenCV DNN module, one thread.

    python benchmarks/dwpose_speed.py --ref-python /tmp/auxenv/bin/python --clone /path/to/sd-webui-controlnet

The real yolox_l.onnx and dw-ll_ucoco_384.onnx cannot be fetched here: both sides run the stand-ins of
tests/data/make_dwpose_models.py (the files' input/output names and shapes), so the figure is the
pipeline around the networks (letterbox, decoding, NMS, crops, SimCC, drawing) plus two tiny networks;
with the real files both sides spend the same network time in the same OpenCV. skimage's astronaut:
five person boxes from the stand-in detector. The reference runs in its own environment
(`--ref-python`), as a subprocess, from tests/data/make_dwpose_reference.py's copy of its code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

REFERENCE = """
import json, sys, tempfile, time
from pathlib import Path
import cv2, numpy as np
cv2.setNumThreads(1)
sys.path.insert(0, {data!r})
import make_dwpose_reference as R
with tempfile.TemporaryDirectory() as folder:
    wholebody, util, _, _ = R.reference_package({clone!r}, Path(folder))
    model = wholebody.Wholebody({det!r}, {pose!r})
    image = R.photo("astronaut")
    def run():
        poses = model.format_result(model(image.copy()))
        return R.draw_poses(util, poses, *image.shape[:2])
    run()
    start = time.process_time()
    for _ in range({repeat}):
        run()
    print(json.dumps({{"seconds": (time.process_time() - start) / {repeat}}}))
"""


def ours(repeat: int) -> float:
    sys.path.insert(0, str(DATA))
    from make_dwpose_reference import photo

    from controlnet.annotators import annotate

    with tempfile.TemporaryDirectory() as folder:
        for name, source in (("yolox_l.onnx", "dwpose_yolox_tiny.onnx"), ("dw-ll_ucoco_384.onnx", "dwpose_rtmpose_tiny.onnx")):
            (Path(folder) / name).write_bytes((DATA / source).read_bytes())
        image = photo("astronaut")
        from controlnet.annotators import dwpose

        def run():
            dwpose._LAST.clear()  # time a detection, not the cache
            return annotate("dw_openpose_full", image, resolution=512, model=folder)

        run()
        start = time.process_time()
        for _ in range(repeat):
            run()
        return (time.process_time() - start) / repeat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-python", required=True)
    parser.add_argument("--clone", required=True, help="a git clone of Mikubill/sd-webui-controlnet")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    script = REFERENCE.format(data=str(DATA), clone=args.clone, det=str(DATA / "dwpose_yolox_tiny.onnx"),
                              pose=str(DATA / "dwpose_rtmpose_tiny.onnx"), repeat=args.repeat)
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([args.ref_python, "-c", script], check=True, capture_output=True, text=True, env=env)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
    mine = ours(args.repeat)
    print(f"dw_openpose_full (stand-in networks, astronaut 512x512): ours {mine:.3f} s, reference {theirs:.3f} s, "
          f"ratio {mine / theirs:.2f}")


if __name__ == "__main__":
    main()
