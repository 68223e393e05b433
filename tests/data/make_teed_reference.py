"""How tests/data/teed_reference.npz was made: controlnet_aux 0.0.10's TEEDdetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_teed_reference.py

It builds controlnet_aux's own `TED()`, gives it the seeded random tensors of
teed_inputs.random_teed_state, saves them as the published 7_model.pth is laid out (a plain state
dict), loads that file with `TEEDdetector.from_pretrained(folder, filename="7_model.pth")` (its own
loading code), and runs the detector on the three seeded pictures at detect resolution = the
shorter side (multiples of 64: neither side resizes). Stored: the seeds, sizes, uint8 maps for
safe_steps=2 (A1111's default) and 0, and the mean of the four output logits (float32, as the
detector computes it) for the ≤ 1e-5 check.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.teed import TEEDdetector
from controlnet_aux.teed.ted import TED

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pidinet_inputs import picture  # noqa: E402
from teed_inputs import PICTURE_SEEDS, PICTURE_SIZES, WEIGHT_SEED, random_teed_state  # noqa: E402


def main():
    shapes = {k: tuple(v.shape) for k, v in TED().state_dict().items()}
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES)}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(random_teed_state(shapes, WEIGHT_SEED), Path(folder) / "7_model.pth")
        detector = TEEDdetector.from_pretrained(folder, filename="7_model.pth")
    detector.model.eval()
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        out[f"softedge_teed_{i}"] = detector(image, detect_resolution=res, output_type="np")[:, :, 0]
        out[f"soft_{i}"] = detector(image, detect_resolution=res, safe_steps=0, output_type="np")[:, :, 0]
        with torch.no_grad():  # the mean logit, as the detector forms it before the sigmoid
            x = torch.from_numpy(image.copy()).float().permute(2, 0, 1)[None]
            logits = [e.numpy().astype(np.float32)[0, 0] for e in detector.model(x)]
            out[f"raw_{i}"] = np.mean(np.stack(logits, axis=2), axis=2)
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "teed_reference.npz", **out)


if __name__ == "__main__":
    main()
