"""CPU time of normal_bae per 512-px photo against controlnet_aux 0.0.10's NormalBaeDetector, same run.

    python benchmarks/normal_bae_speed.py --aux-python /tmp/auxenv/bin/python [--repeat 3]

Both sides: one thread, the real-size network (72.6 M values) with freshly initialised weights (time
does not depend on the values), a 512×768 seeded picture at detect resolution 512, the median process time of
`repeat` calls after one warm-up. controlnet_aux runs in its own environment (it is not a
dependency): this same file is run there with `--side aux`. Prints both times and the ratio
(ours / controlnet_aux; ≤ 1.0 is the goal).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from midas_speed import median_time  # process time: one thread, so other jobs on the machine do not count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))


def time_side(side: str, folder: Path, repeat: int) -> float:
    import torch
    from pidinet_inputs import picture

    torch.set_num_threads(1)
    image = picture(11, (512, 768))
    if side == "aux":
        from controlnet_aux.normalbae import NormalBaeDetector

        detector = NormalBaeDetector.from_pretrained(str(folder))
        return median_time(lambda: detector(image, detect_resolution=512, image_resolution=512, output_type="np"), repeat)
    from controlnet.annotators import annotate

    return median_time(lambda: annotate("normal_bae", image, resolution=512, model=folder), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="a Python with controlnet-aux 0.0.10 installed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", choices=("ours", "aux"), default="ours")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "aux":
        print(time_side("aux", args.folder, args.repeat))
        return
    import torch

    from controlnet.annotators.normal_bae_network import NormalBae

    with tempfile.TemporaryDirectory() as folder:
        torch.save({"model": NormalBae().state_dict()}, Path(folder) / "scannet.pt")  # the published layout
        ours = time_side("ours", Path(folder), args.repeat)
        print(f"normal_bae (ours): {ours:.3f} s")
        if args.aux_python:
            command = [args.aux_python, __file__, "--side", "aux", "--folder", folder, "--repeat", str(args.repeat)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            aux = float(output.strip().splitlines()[-1])
            print(f"controlnet_aux NormalBaeDetector: {aux:.3f} s; ratio {ours / aux:.2f}")


if __name__ == "__main__":
    main()
