"""ControlNet's Apache-2.0 HED network (`ControlNetHED_Apache2`), sized to load `ControlNetHED.pth`.

Five VGG-like stages, each with a 1×1 projection to one edge channel; the annotator averages the
five side outputs. Parameter names match the published file exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, layers: int):
        super().__init__()
        self.convs = nn.Sequential(
            *[nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1) for i in range(layers)]
        )
        self.projection = nn.Conv2d(out_channels, 1, 1)

    def forward(self, x: torch.Tensor, down_sample: bool = False):
        if down_sample:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        for conv in self.convs:
            x = F.relu(conv(x))
        return x, self.projection(x)


class ControlNetHED(nn.Module):
    """Input: RGB float in 0..255, N×3×H×W. Output: five N×1×h×w edge logits (full to 1/16 size)."""

    def __init__(self):
        super().__init__()
        self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))  # learned mean colour
        self.block1 = DoubleConvBlock(3, 64, 2)
        self.block2 = DoubleConvBlock(64, 128, 2)
        self.block3 = DoubleConvBlock(128, 256, 3)
        self.block4 = DoubleConvBlock(256, 512, 3)
        self.block5 = DoubleConvBlock(512, 512, 3)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = x - self.norm
        sides = []
        for i, block in enumerate((self.block1, self.block2, self.block3, self.block4, self.block5)):
            h, side = block(h, down_sample=i > 0)
            sides.append(side)
        return sides
