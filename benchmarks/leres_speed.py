"""CPU time of depth_leres / depth_leres++ per 512-px photo against controlnet_aux 0.0.10's LeresDetector.

    python benchmarks/leres_speed.py --aux-python /tmp/auxenv/bin/python [--rounds 3] [--modules depth_leres]

Both sides: one thread, the real-size networks (ResNeXt-101 32x8d LeReS, 64-wide merge U-Net) with freshly
initialised weights saved in the published layouts (time does not depend on the values), a 512×768 seeded
picture at detect resolution 512. Rounds are interleaved (ours, then controlnet_aux in its own environment,
where it is not a dependency: this same file is run there with `--side aux`); each side times one call
after a warm-up, as process time, and the medians over rounds are printed with the ratio (ours /
controlnet_aux; ≤ 1.0 is the goal).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from midas_speed import median_time  # process time: one thread, so other jobs on the machine do not count

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
MODULES = ("depth_leres", "depth_leres++")


def time_side(side: str, module: str, folder: Path) -> float:
    import torch
    from pidinet_inputs import picture

    torch.set_num_threads(1)
    image = picture(11, (512, 768))
    if side == "aux":
        from controlnet_aux.leres import LeresDetector

        detector = LeresDetector.from_pretrained(str(folder))
        return median_time(lambda: detector(image, boost=module == "depth_leres++", detect_resolution=512,
                                            image_resolution=512, output_type="np"), 1)
    from controlnet.annotators import annotate

    return median_time(lambda: annotate(module, image, resolution=512, model=folder), 1)


def save_weights(folder: Path) -> None:
    import torch

    from controlnet.annotators.leres_merge_network import MergeNet
    from controlnet.annotators.leres_network import LeresDepth

    torch.save({"depth_model": LeresDepth().state_dict()}, folder / "res101.pth")  # the published layouts
    torch.save(MergeNet().state_dict(), folder / "latest_net_G.pth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="a Python with controlnet-aux 0.0.10 installed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modules", nargs="+", choices=MODULES, default=list(MODULES))
    parser.add_argument("--side", choices=("ours", "aux"), default="ours")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "aux":
        print(time_side("aux", args.modules[0], args.folder))
        return
    with tempfile.TemporaryDirectory() as folder:
        save_weights(Path(folder))
        for module in args.modules:
            ours, aux = [], []
            for _ in range(args.rounds):
                ours.append(time_side("ours", module, Path(folder)))
                if args.aux_python:
                    command = [args.aux_python, __file__, "--side", "aux", "--folder", folder, "--modules", module]
                    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                    aux.append(float(output.strip().splitlines()[-1]))
            line = f"{module} (ours): {statistics.median(ours):.2f} s"
            if aux:
                line += (f"; controlnet_aux LeresDetector: {statistics.median(aux):.2f} s; "
                         f"ratio {statistics.median(ours) / statistics.median(aux):.2f}")
            print(line + f" (process time, median of {args.rounds} interleaved rounds)", flush=True)


if __name__ == "__main__":
    main()
