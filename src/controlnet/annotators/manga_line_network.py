"""The manga structural-line network (Li et al. 2017, "Deep Extraction of Manga Structural Lines"),
as published in `erika.pth` (its PyTorch port of the Theano model).

A pre-activation residual U-Net on one grey channel in 0..255: five encoder stages (24 to 384
filters, the last four halving the size), four decoder stages (nearest ×2 upsampling) each added
to the encoder stage of the same size, then two 16-filter blocks and a 1×1 convolution. Every
convolution is preceded by batch norm (eps 1e-3) and LeakyReLU(0.2). Attribute names and Sequential
indices follow the published file so it loads strictly.
"""

from __future__ import annotations

import torch
from torch import nn


class PreActConv(nn.Module):
    """batch norm → LeakyReLU(0.2) → convolution (k×k, 'same' padding), optionally then nearest ×2."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, upsample: bool = False):
        super().__init__()
        layers = [nn.BatchNorm2d(cin, eps=1e-3), nn.LeakyReLU(0.2), nn.Conv2d(cin, cout, kernel, stride, kernel // 2)]
        self.model = nn.Sequential(*layers, *([nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Shortcut(nn.Module):
    """x + y, with x projected by a 1×1 convolution (strided, or followed by ×2 upsampling) when
    its shape differs from y's."""

    def __init__(self, cin: int, cout: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.model = None
        if cin != cout or stride != 1:
            layers = [nn.Conv2d(cin, cout, 1, stride)] + ([nn.Upsample(scale_factor=2, mode="nearest")] if upsample else [])
            self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x if self.model is None else self.model(x)) + y


class ResBlock(nn.Module):
    """Two pre-activation 3×3 convolutions plus the shortcut; the first may stride 2 or upsample ×2."""

    def __init__(self, cin: int, cout: int, stride: int = 1, upsample: bool = False):
        super().__init__()
        self.conv1 = PreActConv(cin, cout, stride=stride, upsample=upsample)
        self.residual = PreActConv(cout, cout)
        self.shortcut = Shortcut(cin, cout, stride, upsample)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x, self.residual(self.conv1(x)))


class Stage(nn.Module):
    """`count` residual blocks. Encoder: the last one halves the size (not in a `keep_size` stage);
    decoder (`upsample`): the first one doubles it."""

    def __init__(self, cin: int, cout: int, count: int, keep_size: bool = False, upsample: bool = False):
        super().__init__()
        blocks = []
        for i in range(count):
            stride = 2 if i == count - 1 and not (keep_size or upsample) else 1
            blocks.append(ResBlock(cin if i == 0 else cout, cout, stride, upsample and i == 0))
        self.model = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class MangaLineNetwork(nn.Module):
    """1×H×W grey (0..255, sides multiples of 16) → lines, dark on white, in about 0..255."""

    def __init__(self):
        super().__init__()
        self.block0 = Stage(1, 24, 2, keep_size=True)
        self.block1 = Stage(24, 48, 3)
        self.block2 = Stage(48, 96, 5)
        self.block3 = Stage(96, 192, 7)
        self.block4 = Stage(192, 384, 12)
        self.block5 = Stage(384, 192, 7, upsample=True)
        self.res1 = Shortcut(192, 192)
        self.block6 = Stage(192, 96, 5, upsample=True)
        self.res2 = Shortcut(96, 96)
        self.block7 = Stage(96, 48, 3, upsample=True)
        self.res3 = Shortcut(48, 48)
        self.block8 = Stage(48, 24, 2, upsample=True)
        self.res4 = Shortcut(24, 24)
        self.block9 = Stage(24, 16, 2, keep_size=True)
        self.conv15 = PreActConv(16, 1, kernel=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = self.block0(x)
        x1 = self.block1(x0)
        x2 = self.block2(x1)
        x3 = self.block3(x2)
        y = self.res1(x3, self.block5(self.block4(x3)))
        y = self.res2(x2, self.block6(y))
        y = self.res3(x1, self.block7(y))
        y = self.res4(x0, self.block8(y))
        return self.conv15(self.block9(y))
