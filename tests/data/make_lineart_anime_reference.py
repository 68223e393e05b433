"""How tests/data/lineart_anime_reference.npz was made: controlnet_aux 0.0.10's LineartAnimeDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_lineart_anime_reference.py

It builds controlnet_aux's own UnetGenerator(3, 1, 8, 64) for its parameter shapes, saves the seeded
random tensors of lineart_anime_inputs.random_lineart_anime_state as the published netG.pth is laid
out (a plain state dict with DataParallel's "module." prefixes), loads that file with
`LineartAnimeDetector.from_pretrained(folder)` (its own loading code, which strips the prefixes),
and runs the detector on the three seeded pictures at detect and image resolution = the shorter
side (multiples of 64: neither side resizes before the network). Stored: the seeds, sizes, the
uint8 maps, and every RAW_STRIDE-th row and column of the raw network output (float32, on the
picture stretched to multiples of 256 as the detector feeds it) for the ≤ 1e-5 check.
"""

import functools
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from controlnet_aux.lineart_anime import LineartAnimeDetector, UnetGenerator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from lineart_anime_inputs import (  # noqa: E402
    PICTURE_SEEDS,
    PICTURE_SIZES,
    RAW_STRIDE,
    WEIGHT_SEED,
    published_layout,
    random_lineart_anime_state,
)
from pidinet_inputs import picture  # noqa: E402


def main():
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    shapes = {k: tuple(v.shape) for k, v in UnetGenerator(3, 1, 8, 64, norm_layer=norm).state_dict().items()}
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES), "raw_stride": np.array(RAW_STRIDE)}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(published_layout(random_lineart_anime_state(shapes, WEIGHT_SEED)), Path(folder) / "netG.pth")
        detector = LineartAnimeDetector.from_pretrained(folder)
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        out[f"lineart_anime_{i}"] = detector(image, detect_resolution=res, image_resolution=res, output_type="np")[:, :, 0]
        h, w = (-(-s // 256) * 256 for s in size)  # the detector's own stretch, as its __call__ does it
        stretched = cv2.resize(image, (w, h), interpolation=cv2.INTER_CUBIC)
        with torch.no_grad():
            x = (torch.from_numpy(stretched).float() / 127.5 - 1.0).permute(2, 0, 1)[None]
            raw = detector.model(x)[0, 0].numpy().astype(np.float32)
        out[f"raw_{i}"] = raw[::RAW_STRIDE, ::RAW_STRIDE].copy()
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "lineart_anime_reference.npz", **out)


if __name__ == "__main__":
    main()
