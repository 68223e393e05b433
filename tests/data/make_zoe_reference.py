"""Regenerate zoe_reference.npz: controlnet_aux 0.0.10's ZoeDetector post-processing on a seeded array.

Run with an environment that has controlnet_aux (never a project dependency):
    python tests/data/make_zoe_reference.py
The detector's network is replaced by a stub whose `infer` returns the seeded distance map, so only
controlnet_aux's own post-processing (percentile 2..85, flip, clip) produces the stored image.
"""

from pathlib import Path

import numpy as np
import torch
from controlnet_aux.zoe import ZoeDetector

rng = np.random.default_rng(22)
distance = (rng.gamma(2.0, 1.5, size=(64, 64)) + 0.5).astype(np.float32)


class StubZoe(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def infer(self, x):
        return torch.from_numpy(distance)[None, None]


image = np.zeros((64, 64, 3), np.uint8)
out = ZoeDetector(StubZoe())(image, detect_resolution=64, image_resolution=64, output_type="np")
np.savez_compressed(Path(__file__).with_name("zoe_reference.npz"), distance=distance, image=out[:, :, 0])
