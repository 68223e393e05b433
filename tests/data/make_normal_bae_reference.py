"""How tests/data/normal_bae_reference.npz was made: controlnet_aux 0.0.10's NormalBaeDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_normal_bae_reference.py

It builds controlnet_aux's own full-size `NNET` (EfficientNet-B5 from its bundled geffnet code and
the BN decoder, 72.6 M values: its classes take no width or depth, so the network is not reduced),
gives it the seeded random tensors of normal_bae_inputs.random_normal_bae_state, saves them as the
published scannet.pt is laid out ({"model": {"module.<name>": tensor}}), loads that file with
`NormalBaeDetector.from_pretrained(folder)` (its own loading code) and runs the detector on three
seeded pictures at detect resolution = the shorter side (multiples of 64: neither side resizes).
Stored: the seeds, sizes, the uint8 maps, and the raw unit normals (x, y, z of the full-resolution
output, float32) for the ≤ 1e-5 check.
"""

import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.normalbae import NormalBaeDetector
from controlnet_aux.normalbae.nets.NNET import NNET

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from normal_bae_inputs import (  # noqa: E402
    PICTURE_SEEDS,
    PICTURE_SIZES,
    WEIGHT_SEED,
    published_layout,
    random_normal_bae_state,
)
from pidinet_inputs import picture  # noqa: E402

ARGS = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4,
                             importance_ratio=0.7)  # as NormalBaeDetector.from_pretrained sets them


def main():
    shapes = {k: tuple(v.shape) for k, v in NNET(ARGS).state_dict().items()}
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES)}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(published_layout(random_normal_bae_state(shapes, WEIGHT_SEED)), Path(folder) / "scannet.pt")
        detector = NormalBaeDetector.from_pretrained(folder)
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        out[f"normal_bae_{i}"] = detector(image, detect_resolution=res, image_resolution=res, output_type="np")
        with torch.no_grad():  # the network's full-resolution normals, as the detector feeds it
            x = detector.norm(torch.from_numpy(image.copy()).float().div(255.0).permute(2, 0, 1)[None])
            out[f"raw_{i}"] = detector.model(x)[0][-1][0, :3].numpy().astype(np.float32)
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "normal_bae_reference.npz", **out)


if __name__ == "__main__":
    main()
