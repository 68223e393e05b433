"""CPU time of lineart_anime, anyline and lineart_anime_denoise per 512-px photo against their references, same run.

    python benchmarks/anime_anyline_speed.py --aux-python /tmp/auxenv/bin/python [--repeat 3] [--original DIR]

References: controlnet_aux 0.0.10's LineartAnimeDetector and AnylineDetector; for the manga line
(not in controlnet_aux) the original `res_skip` of a MangaLineExtraction_PyTorch checkout given by
`--original`, with sd-webui-controlnet's steps (grey, 0..255, 255 − output); skipped without it.

Both sides: one thread, the real-size network with random weights (time does not depend on the
values), a 512×768 seeded picture at detect resolution 512 (Anyline: controlnet_aux's default is
1280; both sides are given 512 here), the median of `repeat` calls after one warm-up.
controlnet_aux runs in its own environment (it is not a dependency): this same file is run there
with `--side aux`. Prints both times and the ratio (ours / controlnet_aux; ≤ 1.0 is the goal).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from teed_speed import median_time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "data"))
FILES = {"lineart_anime": "netG.pth", "anyline": "MTEED.pth", "lineart_anime_denoise": "erika.pth"}


def original_manga_line(folder: Path, original: Path):
    """sd-webui-controlnet's manga_line steps around the original network (padding is a no-op at 512×768)."""
    import cv2
    import numpy as np
    import torch

    sys.path.insert(0, str(original))
    from model_torch import res_skip

    net = res_skip()
    net.load_state_dict(torch.load(folder / "erika.pth"))
    net.eval()

    def run(image):
        grey = torch.from_numpy(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)).float()[None, None]
        with torch.no_grad():
            return (255 - net(grey).numpy()[0, 0]).clip(0, 255).astype(np.uint8)

    return run


def aux_detector(name: str, folder: Path, original: Path | None = None):
    if name == "lineart_anime_denoise":
        return original_manga_line(folder, original)
    if name == "lineart_anime":
        from controlnet_aux.lineart_anime import LineartAnimeDetector

        detector = LineartAnimeDetector.from_pretrained(str(folder))
        return lambda image: detector(image, detect_resolution=512, image_resolution=512, output_type="np")
    from controlnet_aux.anyline import AnylineDetector

    detector = AnylineDetector.from_pretrained(str(folder), filename="MTEED.pth")
    detector.model.eval()
    return lambda image: detector(image, detect_resolution=512, output_type="np")


def time_side(side: str, name: str, folder: Path, repeat: int, original: Path | None = None) -> float:
    import torch
    from pidinet_inputs import picture

    torch.set_num_threads(1)
    image = picture(11, (512, 768))
    if side == "aux":
        run = aux_detector(name, folder, original)
        return median_time(lambda: run(image), repeat)
    from controlnet.annotators import annotate

    return median_time(lambda: annotate(name, image, resolution=512, model=folder), repeat)


def save_random_weights(name: str, folder: Path) -> None:
    import torch

    if name == "lineart_anime":
        from controlnet.annotators.lineart_anime_network import AnimeLineartGenerator as Network
    elif name == "lineart_anime_denoise":
        from controlnet.annotators.manga_line_network import MangaLineNetwork as Network
    else:
        from controlnet.annotators.teed_network import TEED as Network
    torch.save(Network().state_dict(), folder / FILES[name])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--aux-python", help="a Python with controlnet-aux 0.0.10 installed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=tuple(FILES), help="time one detector")
    parser.add_argument("--original", type=Path, help="a MangaLineExtraction_PyTorch checkout (the manga line reference)")
    parser.add_argument("--side", choices=("ours", "aux"), default="ours")
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "aux":
        print(time_side("aux", args.only, args.folder, args.repeat, args.original))
        return
    for name in [args.only] if args.only else FILES:
        if name == "lineart_anime_denoise" and args.original is None and not args.only:
            continue
        with tempfile.TemporaryDirectory() as folder:
            save_random_weights(name, Path(folder))
            ours = time_side("ours", name, Path(folder), args.repeat)
            print(f"{name} (ours): {ours:.3f} s", flush=True)
            if args.aux_python:
                command = [args.aux_python, __file__, "--side", "aux", "--only", name, "--folder", folder,
                           "--repeat", str(args.repeat)] + (["--original", str(args.original)] if args.original else [])
                output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                aux = float(output.strip().splitlines()[-1])
                print(f"{name} (reference): {aux:.3f} s; ratio {ours / aux:.2f}", flush=True)


if __name__ == "__main__":
    main()
