"""How tests/data/manga_line_reference.npz was made: the original MangaLineExtraction network on random weights,
run as sd-webui-controlnet's manga_line annotator runs it.

controlnet_aux 0.0.10 has no manga line detector, and sd-webui-controlnet's annotator imports the
web UI, so the reference is the network the extension copies, `res_skip` of
github.com/ljsabc/MangaLineExtraction_PyTorch (model_torch.py, commit 6ec136d), with the steps of
the extension's `MangaLineExtration.__call__` written out below (grey by cv2.COLOR_RGB2GRAY, fed
in 0..255, `255 - output`, clip, uint8). Run OUTSIDE the project (the original code is not ours):

    git clone https://github.com/ljsabc/MangaLineExtraction_PyTorch /tmp/mle
    /tmp/auxenv/bin/python tests/data/make_manga_line_reference.py /tmp/mle

(/tmp/auxenv: torch 2.14.1, CPU, as for the other make_*_reference.py.) It saves the seeded random
tensors of manga_line_inputs.random_manga_line_state as the published erika.pth is laid out (a
plain state dict), loads it strictly into `res_skip` as the extension does, and runs the three
seeded pictures (multiples of 64: the extension pads nothing). Stored: the seeds, sizes, uint8
maps, and every RAW_STRIDE-th row and column of the raw output (float32) for the equality check.
"""

import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from manga_line_inputs import (  # noqa: E402
    PICTURE_SEEDS,
    PICTURE_SIZES,
    RAW_STRIDE,
    WEIGHT_SEED,
    random_manga_line_state,
)
from pidinet_inputs import picture  # noqa: E402


def main(original: Path):
    sys.path.insert(0, str(original))
    from model_torch import res_skip

    shapes = {k: tuple(v.shape) for k, v in res_skip().state_dict().items()}
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES), "raw_stride": np.array(RAW_STRIDE)}
    net = res_skip()
    with tempfile.TemporaryDirectory() as folder:
        torch.save(random_manga_line_state(shapes, WEIGHT_SEED), Path(folder) / "erika.pth")
        net.load_state_dict(torch.load(Path(folder) / "erika.pth"))
    net.eval()
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        grey = np.ascontiguousarray(cv2.cvtColor(picture(seed, size), cv2.COLOR_RGB2GRAY))
        with torch.no_grad():
            raw = net(torch.from_numpy(grey).float()[None, None]).numpy()[0, 0]
        out[f"lineart_anime_denoise_{i}"] = (255 - raw).clip(0, 255).astype(np.uint8)
        out[f"raw_{i}"] = raw[::RAW_STRIDE, ::RAW_STRIDE].astype(np.float32)
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "manga_line_reference.npz", **out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
