"""TEED (Tiny and Efficient Edge Detector, Soria et al. 2023), as published in `7_model.pth`.

About 58k parameters: two strided double-conv blocks and one dense block, each upsampled back to
the input size by transposed convolutions, then fused by depthwise convolutions. Tensor names
follow the published file so it loads strictly.
"""

from __future__ import annotations

import torch
from torch import nn


def smish(x: torch.Tensor) -> torch.Tensor:
    """x · tanh(ln(1 + sigmoid(x))), TEED's activation (in place on a fresh tensor: inference only)."""
    return torch.sigmoid(x).add_(1).log_().tanh_().mul_(x)


class Smish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return smish(x)


class DoubleConv(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int = 1, activate_out: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(mid, cout, 3, padding=1)
        self.activate_out = activate_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(smish(self.conv1(x)))
        return smish(x) if self.activate_out else x


class PointConv(nn.Module):
    """A 1×1 convolution (strided for the skip from block 1)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class DenseLayer(nn.Module):
    """Pad-2 then unpadded 3×3 convolutions on smish(x), averaged with the skip input."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=2)
        self.conv2 = nn.Conv2d(cout, cout, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.conv2(smish(self.conv1(smish(x)))) + skip)


class DenseBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.denselayer1 = DenseLayer(cin, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.denselayer1(x, skip)


class Upsample(nn.Module):
    """`scale` times (1×1 conv, smish, ×2 transposed conv); 16 channels between, 1 at the end."""

    def __init__(self, cin: int, scale: int):
        super().__init__()
        kernel, pad = 2**scale, (0, 0, 1)[scale]
        layers = []
        for i in range(scale):
            cout = 1 if i == scale - 1 else 16
            layers += [nn.Conv2d(cin, cout, 1), Smish(), nn.ConvTranspose2d(cout, cout, kernel, stride=2, padding=pad)]
            cin = cout
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class DoubleFusion(nn.Module):
    """Fuses the three side maps with two depthwise convolutions (8 maps per side, then 24)."""

    def __init__(self):
        super().__init__()
        self.DWconv1 = nn.Conv2d(3, 24, 3, padding=1, groups=3)
        self.DWconv2 = nn.Conv2d(24, 24, 3, padding=1, groups=24)

    def forward(self, sides: torch.Tensor) -> torch.Tensor:
        first = self.DWconv1(smish(sides))
        second = self.DWconv2(smish(first))
        return smish((first + second).sum(1, keepdim=True))


class TEED(nn.Module):
    def __init__(self):
        super().__init__()
        self.block_1 = DoubleConv(3, 16, 16, stride=2)
        self.block_2 = DoubleConv(16, 32, 32, activate_out=False)
        self.dblock_3 = DenseBlock(32, 48)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.side_1 = PointConv(16, 32, 2)
        self.pre_dense_3 = PointConv(32, 48, 1)
        self.up_block_1 = Upsample(16, 1)
        self.up_block_2 = Upsample(32, 1)
        self.up_block_3 = Upsample(48, 2)
        self.block_cat = DoubleFusion()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three side maps and the fused map (logits), each at 2·ceil(H/2) or 4·ceil(H/4)."""
        block_1 = self.block_1(x)
        block_2 = self.block_2(block_1)
        block_2_down = self.maxpool(block_2)
        block_3 = self.dblock_3(block_2_down + self.side_1(block_1), self.pre_dense_3(block_2_down))
        sides = [self.up_block_1(block_1), self.up_block_2(block_2), self.up_block_3(block_3)]
        return [*sides, self.block_cat(torch.cat(sides, dim=1))]
