"""How tests/data/anyline_reference.npz was made: controlnet_aux 0.0.10's AnylineDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_anyline_reference.py

It builds controlnet_aux's own `TED()` for its parameter shapes, saves the seeded random tensors
of teed_inputs.random_teed_state (seed anyline_inputs.WEIGHT_SEED) as the published MTEED.pth is
laid out (a plain state dict), loads that file with `AnylineDetector.from_pretrained(folder,
filename="MTEED.pth")` (its own loading code), and runs the detector with its defaults (σ 2,
threshold 3) on the three seeded pictures at detect resolution = the shorter side (multiples of
64: neither side resizes). Stored: the seeds, sizes, the uint8 maps, and every RAW_STRIDE-th row
and column of the mean of TEED's four logits (float32, as the detector forms it) for the ≤ 1e-5 check.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.anyline import AnylineDetector
from controlnet_aux.teed.ted import TED

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from anyline_inputs import PICTURE_SEEDS, PICTURE_SIZES, RAW_STRIDE, WEIGHT_SEED  # noqa: E402
from pidinet_inputs import picture  # noqa: E402
from teed_inputs import random_teed_state  # noqa: E402


def main():
    shapes = {k: tuple(v.shape) for k, v in TED().state_dict().items()}
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES), "raw_stride": np.array(RAW_STRIDE)}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(random_teed_state(shapes, WEIGHT_SEED), Path(folder) / "MTEED.pth")
        detector = AnylineDetector.from_pretrained(folder, filename="MTEED.pth")
    detector.model.eval()
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        out[f"anyline_{i}"] = detector(image, detect_resolution=min(size), output_type="np")[:, :, 0]
        with torch.no_grad():  # the mean logit, as the detector forms it before the sigmoid
            x = torch.from_numpy(image.copy()).float().permute(2, 0, 1)[None]
            logits = [e.numpy().astype(np.float32)[0, 0] for e in detector.model(x)]
            raw = np.mean(np.stack(logits, axis=2), axis=2)
        out[f"raw_{i}"] = raw[::RAW_STRIDE, ::RAW_STRIDE].copy()
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "anyline_reference.npz", **out)


if __name__ == "__main__":
    main()
