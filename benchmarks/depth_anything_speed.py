"""CPU time of depth_anything_v2 per 512-px photo against the authors' code (comfyui_controlnet_aux), same run.

    python benchmarks/depth_anything_speed.py --aux-python /tmp/auxenv/bin/python \
        --aux-src /path/to/comfyui_controlnet_aux/src [--repeat 3]

controlnet_aux 0.0.10 has no Depth Anything, so the reference is comfyui_controlnet_aux's
DepthAnythingV2Detector (the authors' DepthAnythingV2), run in its own environment with this same
file and `--side aux`. Both sides: one thread, the real-size vits network with seeded random weights
in the published layout (time does not depend on the values), a 512×768 seeded picture (ours at
detect resolution 512; the network sees 518×784 on both sides), the median of `repeat` calls after
one warm-up. Times are process (CPU) times, as benchmarks/openpose_speed.py: on a shared machine wall
times of the two sides, taken minutes apart, swung from 0.60 to 1.27. Prints both times and the ratio
(ours / reference; ≤ 1.0 is the goal).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
VITS = (384, 12, 64, (48, 96, 192, 384), 32)  # width, blocks, features, projections, head of depth_anything_v2_vits.pth


def median_time(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.process_time()
        call()
        times.append(time.process_time() - start)
    return sorted(times)[len(times) // 2]


def time_side(side: str, weights: Path, repeat: int, aux_src: str | None = None) -> float:
    import torch
    from pidinet_inputs import picture

    torch.set_num_threads(1)
    image = picture(11, (512, 768))
    if side == "aux":
        sys.path.insert(0, aux_src)
        from custom_controlnet_aux.depth_anything_v2 import DepthAnythingV2Detector

        detector = DepthAnythingV2Detector.from_pretrained(str(weights.parent), filename=weights.name)
        return median_time(lambda: detector(image, detect_resolution=512, output_type="np", max_depth=1.0), repeat)
    from controlnet.annotators import annotate

    return median_time(lambda: annotate("depth_anything_v2", image, resolution=512, model=weights), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="a Python with torch, torchvision, opencv and huggingface_hub")
    parser.add_argument("--aux-src", help="comfyui_controlnet_aux's src folder (the authors' Depth Anything V2 code)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", choices=("ours", "aux"), default="ours")
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "aux":
        print(time_side("aux", args.weights, args.repeat, args.aux_src))
        return
    import torch
    from depth_anything_inputs import original_shapes, random_depth_anything_state

    with tempfile.TemporaryDirectory() as folder:
        weights = Path(folder) / "depth_anything_v2_vits.pth"
        torch.save(random_depth_anything_state(0, original_shapes(*VITS)), weights)
        ours = time_side("ours", weights, args.repeat)
        print(f"depth_anything_v2 (ours): {ours:.3f} s", flush=True)
        if args.aux_python and args.aux_src:
            command = [args.aux_python, __file__, "--side", "aux", "--weights", str(weights), "--repeat", str(args.repeat),
                       "--aux-src", args.aux_src]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            aux = float(output.strip().splitlines()[-1])
            print(f"comfyui_controlnet_aux DepthAnythingV2Detector: {aux:.3f} s; ratio {ours / aux:.2f}")


if __name__ == "__main__":
    main()
