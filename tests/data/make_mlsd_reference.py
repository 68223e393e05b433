"""How tests/data/mlsd_reference.npz was made: controlnet_aux 0.0.10's MLSDdetector on random weights.

Run OUTSIDE the project, in the environment of make_pidinet_reference.py (controlnet_aux is not a
dependency):

    /tmp/auxenv/bin/python tests/data/make_mlsd_reference.py

It builds controlnet_aux's own `MobileV2_MLSD_Large`, gives it the seeded random tensors of
mlsd_inputs.random_mlsd_state, saves them as a plain state dict (the layout of
mlsd_large_512_fp32.pth), loads the file with `MLSDdetector.from_pretrained(folder)` and runs it on
three seeded pictures (and the same for MobileV2_MLSD_Tiny under MLSDdetector, seed TINY_SEED) at detect = image resolution = the shorter side (no resize on either side),
with A1111's default thresholds (0.1, 0.1). Stored: seeds, sizes, the uint8 line maps, and the raw
network output (float32, every 4th row and column, to keep the file small) for the ≤ 1e-5 check.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.mlsd import MLSDdetector
from controlnet_aux.mlsd.models import mbv2_mlsd_tiny
from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from mlsd_inputs import PICTURE_SEEDS, PICTURE_SIZES, TINY_SEED, WEIGHT_SEED, picture, random_mlsd_state  # noqa: E402


def tiny_detector():
    """MLSDdetector around controlnet_aux's MobileV2_MLSD_Tiny (from_pretrained only builds the large one)."""
    mbv2_mlsd_tiny.MobileNetV2._load_pretrained_model = lambda self: None  # it would download ImageNet weights
    model = mbv2_mlsd_tiny.MobileV2_MLSD_Tiny()
    model.load_state_dict(random_mlsd_state(model.state_dict(), TINY_SEED), strict=True)
    return MLSDdetector(model.eval())


def main():
    state = random_mlsd_state(MobileV2_MLSD_Large().state_dict(), WEIGHT_SEED)
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES)}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(state, Path(folder) / "mlsd_large_512_fp32.pth")
        detector = MLSDdetector.from_pretrained(folder)
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        out[f"mlsd_tiny_{i}"] = tiny_detector()(image, 0.1, 0.1, detect_resolution=res, image_resolution=res,
                                                output_type="np")[:, :, 0]
        out[f"mlsd_{i}"] = detector(image, 0.1, 0.1, detect_resolution=res, image_resolution=res,
                                    output_type="np")[:, :, 0]
        x = np.concatenate([image, np.ones((*size, 1))], axis=-1).transpose(2, 0, 1)[None].astype("float32")
        with torch.no_grad():
            out[f"raw_{i}"] = detector.model(torch.from_numpy(x / 127.5 - 1.0).float())[0, :, ::4, ::4].numpy()
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "mlsd_reference.npz", **out)


if __name__ == "__main__":
    main()
