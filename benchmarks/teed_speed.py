"""CPU time of softedge_teed per 512-px photo against controlnet_aux 0.0.10's TEEDdetector, same run.

    python benchmarks/teed_speed.py --aux-python /tmp/auxenv/bin/python [--repeat 5]

Both sides: one thread, the real-size network with random weights (time does not depend on the
values), a 512×768 seeded picture at detect resolution 512, the median of `repeat` calls after one
warm-up. controlnet_aux runs in its own environment (it is not a dependency): this same file is run
there with `--side aux`. Prints both times and the ratio (ours / controlnet_aux; ≤ 1.0 is the goal).
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


def median_time(call, repeat: int) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def time_side(side: str, folder: Path, repeat: int) -> float:
    import torch
    from pidinet_inputs import picture

    torch.set_num_threads(1)
    image = picture(11, (512, 768))
    if side == "aux":
        from controlnet_aux.teed import TEEDdetector

        detector = TEEDdetector.from_pretrained(str(folder), filename="7_model.pth")
        detector.model.eval()
        return median_time(lambda: detector(image, detect_resolution=512, output_type="np"), repeat)
    from controlnet.annotators import annotate

    return median_time(lambda: annotate("softedge_teed", image, resolution=512, model=folder), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="a Python with controlnet-aux 0.0.10 installed")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--side", choices=("ours", "aux"), default="ours")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "aux":
        print(time_side("aux", args.folder, args.repeat))
        return
    import torch

    from controlnet.annotators.teed_network import TEED

    with tempfile.TemporaryDirectory() as folder:
        torch.save(TEED().state_dict(), Path(folder) / "7_model.pth")
        ours = time_side("ours", Path(folder), args.repeat)
        print(f"softedge_teed (ours): {ours:.3f} s")
        if args.aux_python:
            command = [args.aux_python, __file__, "--side", "aux", "--folder", folder, "--repeat", str(args.repeat)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            aux = float(output.strip().splitlines()[-1])
            print(f"controlnet_aux TEEDdetector: {aux:.3f} s; ratio {ours / aux:.2f}")


if __name__ == "__main__":
    main()
