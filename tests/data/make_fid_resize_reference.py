"""How tests/data/fid_resize_reference.npz was made: torch-fidelity 0.4.0's TF1 bilinear resize.

torch-fidelity is not a dependency: its package imports torchvision, and once installed beside
torchmetrics it is imported by torchmetrics' FID module too. Run OUTSIDE the project, in an
environment of its own with torch and torchvision (e.g. the controlnet_aux one of
make_pidinet_reference.py):

    /tmp/auxenv/bin/pip install --no-deps torch-fidelity==0.4.0
    /tmp/auxenv/bin/python tests/data/make_fid_resize_reference.py

For each input shape: the seeded integer picture of `picture(shape)` (numpy's default_rng, the same
on every machine), resized to 299×299 by `interpolate_bilinear_2d_like_tensorflow1x(...,
align_corners=False)`; stored: the values at 2000 seeded positions (not the whole output, to stay
small) and the output's sum.
"""

from pathlib import Path

import numpy as np
import torch

SHAPES = ((2, 3, 512, 512), (1, 3, 64, 96), (1, 3, 300, 299), (1, 3, 1024, 768))
POSITIONS = 2000


def picture(shape) -> np.ndarray:
    return np.random.default_rng(sum(shape)).integers(0, 256, shape).astype(np.float32)


def positions(shape) -> np.ndarray:
    """Flat indices into the (N, C, 299, 299) output."""
    return np.random.default_rng(1).integers(0, shape[0] * shape[1] * 299 * 299, POSITIONS)


def main() -> None:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    out = {}
    for shape in SHAPES:
        name = "x".join(map(str, shape))
        x = torch.from_numpy(picture(shape))
        y = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False).numpy()
        out[f"{name}_values"] = y.reshape(-1)[positions(shape)]
        out[f"{name}_sum"] = np.float64(y.astype(np.float64).sum())
    np.savez_compressed(Path(__file__).resolve().parent / "fid_resize_reference.npz", **out)


if __name__ == "__main__":
    main()
