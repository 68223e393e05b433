"""How tests/data/pidinet_reference.npz was made: controlnet_aux 0.0.10's PidiNetDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_pidinet_reference.py

It builds controlnet_aux's own `pidinet()`, gives it the seeded random tensors of
pidinet_inputs.random_pidinet_state (one generator, parameters in sorted name order), saves them in
the published layout of table5_pidinet.pth ({"state_dict": {"module.<name>": ...}}), loads that
file with `PidiNetDetector.from_pretrained(folder)` (its own loading code), and runs the detector
on the three seeded pictures of pidinet_inputs.picture at detect = image resolution = the shorter
side (multiples of 64: neither side resizes). Stored: the seeds, sizes, uint8 maps for
safe=False (softedge_pidinet), safe=True (softedge_pidisafe), scribble=True (scribble_pidinet),
and the raw fused network output (float32) for the ≤ 1e-5 check.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.pidi import PidiNetDetector
from controlnet_aux.pidi.model import pidinet

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pidinet_inputs import (  # noqa: E402
    PICTURE_SEEDS,
    PICTURE_SIZES,
    WEIGHT_SEED,
    picture,
    published_layout,
    random_pidinet_state,
)


def main():
    shapes = {k: tuple(v.shape) for k, v in pidinet().state_dict().items()}
    state = random_pidinet_state(shapes, WEIGHT_SEED)
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES)}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(published_layout(state), Path(folder) / "table5_pidinet.pth")
        detector = PidiNetDetector.from_pretrained(folder)
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        common = {"detect_resolution": res, "image_resolution": res, "output_type": "np"}
        out[f"softedge_pidinet_{i}"] = detector(image, safe=False, **common)[:, :, 0]
        out[f"softedge_pidisafe_{i}"] = detector(image, safe=True, **common)[:, :, 0]
        out[f"scribble_pidinet_{i}"] = detector(image, safe=False, scribble=True, **common)[:, :, 0]
        with torch.no_grad():  # the raw fused map, on the BGR input the detector feeds
            x = torch.from_numpy(image[:, :, ::-1].copy()).float().permute(2, 0, 1)[None] / 255.0
            out[f"raw_{i}"] = detector.netNetwork(x)[-1][0, 0].numpy()
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "pidinet_reference.npz", **out)


if __name__ == "__main__":
    main()
