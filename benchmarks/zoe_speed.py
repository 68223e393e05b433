"""CPU time of depth_zoe per 512-px photo against controlnet_aux 0.0.10's ZoeDetector, same run.

    python benchmarks/zoe_speed.py --aux-python /tmp/auxenv/bin/python [--repeat 3]
    python benchmarks/zoe_speed.py --weights ZoeD_M12_N.pt   # ours only, the real file

Both sides: one thread, the real-size ZoeDepth-N (345 M parameters) with random weights (time does not
depend on the values: controlnet_aux's own ZoeDepth makes them, saved as the published file, {"model": state},
and both sides load that file), a 512×768 seeded picture at detect resolution 512 (network input 352×512,
twice: flip averaging), the median process time of `repeat` calls after one warm-up (midas_speed.median_time).
controlnet_aux runs in its own environment (not a dependency): this same file is run there with `--side aux`.
Prints both times and the ratio (ours / controlnet_aux; ≤ 1.0 is the goal).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from midas_speed import median_time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
FILE = "ZoeD_M12_N.pt"


def time_aux(folder: Path, repeat: int) -> float:
    import torch
    from controlnet_aux.zoe import ZoeDetector
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config
    from pidinet_inputs import picture

    torch.set_num_threads(1)
    if not (folder / FILE).exists():  # random weights in the published layout, from controlnet_aux's own class
        torch.save({"model": ZoeDepth.build_from_config(get_config("zoedepth", "infer")).state_dict()}, folder / FILE)
    detector = ZoeDetector.from_pretrained(str(folder))
    image = picture(11, (512, 768))
    return median_time(lambda: detector(image, detect_resolution=512, image_resolution=512, output_type="np"), repeat)


def time_ours(weights: Path, repeat: int) -> float:
    import torch
    from pidinet_inputs import picture

    from controlnet.annotators import annotate

    torch.set_num_threads(1)
    image = picture(11, (512, 768))
    return median_time(lambda: annotate("depth_zoe", image, resolution=512, model=weights), repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="a Python with controlnet-aux 0.0.10 installed")
    parser.add_argument("--weights", type=Path, help=f"a {FILE} to time ours on (else --aux-python makes one)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--side", choices=("ours", "aux"), default="ours")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "aux":
        print(time_aux(args.folder, args.repeat))
        return
    if not (args.aux_python or args.weights):
        parser.error("give --aux-python (to make a random real-size file and compare) or --weights FILE")
    with tempfile.TemporaryDirectory() as folder:
        aux = None
        if args.aux_python:
            command = [args.aux_python, __file__, "--side", "aux", "--folder", folder, "--repeat", str(args.repeat)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            aux = float(output.strip().splitlines()[-1])
        ours = time_ours(args.weights or Path(folder) / FILE, args.repeat)
        print(f"depth_zoe (ours): {ours:.3f} s")
        if aux is not None:
            print(f"controlnet_aux ZoeDetector: {aux:.3f} s; ratio {ours / aux:.2f}")


if __name__ == "__main__":
    main()
