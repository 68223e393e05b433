"""Anime2Sketch's generator (Xiang et al. 2021), as published in `netG.pth`: a pix2pix U-Net.

Eight stride-2 levels (256 px in, 1×1 at the bottom), 64 filters at the top doubling to 512,
instance norm without affine weights, skip connections by concatenation, tanh out. Each level is a
`model` Sequential holding the next level at a fixed index, so tensor names follow the published
file (`model.model.1.model.3.…`) and it loads strictly.
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class UnetLevel(nn.Module):
    """down (4×4 stride-2 conv) → the inner levels → up (4×4 stride-2 transposed conv).

    The outermost level reads the image and ends in tanh; the innermost has no inner level and no
    norm after its down conv; the others return their input concatenated with their output.
    """

    def __init__(self, outer: int, inner: int, inside: nn.Module | None = None, image_channels: int | None = None):
        super().__init__()
        self.outermost = image_channels is not None
        down = nn.Conv2d(image_channels or outer, inner, 4, stride=2, padding=1)
        up = nn.ConvTranspose2d(inner if inside is None else inner * 2, outer, 4, stride=2, padding=1)
        # in place: the LeakyReLU also changes the input this level passes on, which only ever meets a ReLU
        # next (the level above's), where ReLU(LeakyReLU(x)) = ReLU(x); saves copies of the largest tensors
        relu, leaky = nn.ReLU(inplace=True), nn.LeakyReLU(0.2, inplace=True)
        if self.outermost:
            layers = [down, inside, relu, up, nn.Tanh()]
        elif inside is None:
            layers = [leaky, down, relu, up, _norm(outer)]
        else:
            layers = [leaky, down, _norm(inner), inside, relu, up, _norm(outer)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)


class AnimeLineartGenerator(nn.Module):
    """UnetGenerator(3, 1, 8, 64): input RGB in -1..1 with sides multiple of 256, output lines in -1..1."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, levels: int = 8, filters: int = 64):
        super().__init__()
        level = UnetLevel(filters * 8, filters * 8)
        for _ in range(levels - 5):
            level = UnetLevel(filters * 8, filters * 8, level)
        for scale in (4, 2, 1):
            level = UnetLevel(filters * scale, filters * scale * 2, level)
        self.model = UnetLevel(out_channels, filters, level, image_channels=in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
