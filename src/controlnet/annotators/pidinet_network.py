"""PiDiNet (Su et al. 2021, "Pixel Difference Networks for Efficient Edge Detection"), sized to load
`table5_pidinet.pth`: the `carv4` layout with 60 base channels, CDCM dilation (24) and CSAM attention.

Pixel-difference convolutions keep a 3×3 weight, as the published file stores it, and are run as
the plain convolution they equal: central (cd) subtracts the kernel's sum at the centre tap,
angular (ad) subtracts the clockwise-rotated kernel, radial (rd) spreads 8 of the taps over a 5×5 ring.
Parameter names match the published file (after its `module.` prefix is removed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASE_CHANNELS = 60
DILATION_CHANNELS = 24
# the pixel-difference type of the init block and of the 15 blocks after it ("carv4")
LAYOUT = ("cd", "ad", "rd", "cv") * 4
_CLOCKWISE = [3, 0, 1, 6, 4, 2, 7, 8, 5]  # each 3×3 tap's neighbour, one step clockwise
_RING_OUTER = [0, 2, 4, 10, 14, 20, 22, 24]  # 5×5 positions of the 8 non-centre taps, far and near
_RING_INNER = [6, 7, 8, 11, 13, 16, 17, 18]


def difference_kernel(kind: str, weight: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The vanilla kernel (and its padding) equal to a pixel-difference convolution with `weight`."""
    out_c, in_c = weight.shape[:2]
    if kind == "cv":
        return weight, 1
    if kind == "cd":
        kernel = weight.clone()
        kernel[:, :, 1, 1] -= weight.sum(dim=(2, 3))
        return kernel, 1
    flat = weight.reshape(out_c, in_c, 9)
    if kind == "ad":
        return (flat - flat[:, :, _CLOCKWISE]).reshape(weight.shape), 1
    if kind == "rd":
        ring = weight.new_zeros(out_c, in_c, 25)
        taps = flat[:, :, 1:]  # as the published code does: taps 1..8 (the first one is not used)
        ring[:, :, _RING_OUTER] = taps
        ring[:, :, _RING_INNER] = -taps
        return ring.reshape(out_c, in_c, 5, 5), 2
    raise ValueError(f"unknown pixel-difference type {kind!r}")


class DifferenceConv(nn.Module):
    """A 3×3 pixel-difference convolution; stores `weight` (and `bias`) like nn.Conv2d."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, groups: int = 1):
        super().__init__()
        self.kind, self.groups = kind, groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, 3, 3))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel, padding = difference_kernel(self.kind, self.weight)
        return F.conv2d(x, kernel, padding=padding, groups=self.groups)


class PDCBlock(nn.Module):
    """Depthwise pixel-difference conv, ReLU, 1×1 conv, residual; stride 2 max-pools first."""

    def __init__(self, kind: str, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        if stride > 1:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1)
        self.conv1 = DifferenceConv(kind, in_channels, in_channels, groups=in_channels)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = F.max_pool2d(x, 2, 2)
        y = self.conv2(F.relu(self.conv1(x)))
        return y + (self.shortcut(x) if self.stride > 1 else x)


class CDCM(nn.Module):
    """Compact dilation module: 1×1 then the sum of four dilated 3×3 convs (5, 7, 9, 11)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        for i, d in enumerate((5, 7, 9, 11), start=1):
            setattr(self, f"conv2_{i}", nn.Conv2d(out_channels, out_channels, 3, dilation=d, padding=d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(F.relu(x))
        return sum(getattr(self, f"conv2_{i}")(x) for i in range(1, 5))


class CSAM(nn.Module):
    """Compact spatial attention: the input scaled by a one-channel sigmoid mask."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 4, 1)
        self.conv2 = nn.Conv2d(4, 1, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv2(self.conv1(F.relu(x))))


class MapReduce(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class PiDiNet(nn.Module):
    """Input: RGB-ordered float in 0..1 as the caller arranges it, N×3×H×W (H, W multiples of 8).
    Output: four side edge maps and their fusion, each a sigmoid at the input size."""

    def __init__(self):
        super().__init__()
        c = BASE_CHANNELS
        self.init_block = DifferenceConv(LAYOUT[0], 3, c)
        stages = ((c, c, 3), (c, 2 * c, 4), (2 * c, 4 * c, 4), (4 * c, 4 * c, 4))
        layer = 1
        for s, (cin, cout, blocks) in enumerate(stages, start=1):
            for b in range(1, blocks + 1):
                stride = 2 if s > 1 and b == 1 else 1
                block = PDCBlock(LAYOUT[layer], cin if b == 1 else cout, cout, stride)
                setattr(self, f"block{s}_{b}", block)
                layer += 1
        self.stage_blocks = [blocks for *_, blocks in stages]
        fuse = [c, 2 * c, 4 * c, 4 * c]
        self.dilations = nn.ModuleList(CDCM(ch, DILATION_CHANNELS) for ch in fuse)
        self.attentions = nn.ModuleList(CSAM(DILATION_CHANNELS) for _ in fuse)
        self.conv_reduces = nn.ModuleList(MapReduce(DILATION_CHANNELS) for _ in fuse)
        self.classifier = nn.Conv2d(4, 1, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        size = x.shape[2:]
        h = self.init_block(x)
        sides = []
        for s, blocks in enumerate(self.stage_blocks, start=1):
            for b in range(1, blocks + 1):
                h = getattr(self, f"block{s}_{b}")(h)
            i = s - 1
            side = self.conv_reduces[i](self.attentions[i](self.dilations[i](h)))
            sides.append(F.interpolate(side, size, mode="bilinear", align_corners=False))
        fused = self.classifier(torch.cat(sides, dim=1))
        return [torch.sigmoid(t) for t in (*sides, fused)]
