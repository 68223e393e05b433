"""M-LSD large and tiny: the networks behind `mlsd_large_512_fp32.pth` and `mlsd_tiny_512_fp32.pth`.

Parameter names follow the published file: a MobileNetV2 trunk (`backbone.features.0..13`) and
the decoder blocks `block15`..`block23`. Output: 9 maps at half the input size, of which the
last 5 are used (centre score, 4 displacements).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _TfConv(nn.Sequential):
    """Conv, BN, ReLU6; stride 2 pads right/bottom only (TFLite's SAME padding)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = 0 if stride == 2 else (kernel - 1) // 2
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))  # in place on fresh tensors, as published
        self.stride = stride

    def forward(self, x):
        return super().forward(F.pad(x, (0, 1, 0, 1)) if self.stride == 2 else x)


class _Inverted(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_TfConv(cin, hidden, 1)] if expand != 1 else []
        layers += [_TfConv(hidden, hidden, 3, stride, hidden), nn.Conv2d(hidden, cout, 1, bias=False),
                   nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class _Backbone(nn.Module):
    SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))

    def __init__(self, stages: int = 5, taps: tuple[int, ...] = (1, 3, 6, 10, 13)):
        super().__init__()
        self.TAPS = taps
        features, cin = [_TfConv(4, 32, 3, 2)], 32
        for expand, cout, repeat, stride in self.SETTING[:stages]:
            for i in range(repeat):
                features.append(_Inverted(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        self.features = nn.Sequential(*features)

    def forward(self, x):
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.TAPS:
                taps.append(x)
        return taps


def _cbr(cin, cout, kernel, dilation=1, inplace=False):
    pad = dilation * (kernel - 1) // 2
    conv = nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=inplace))


class _Merge(nn.Module):
    """BlockTypeA: 1×1 on both inputs, the deeper one upsampled ×2 (align_corners), concatenated."""

    def __init__(self, c_skip: int, c_deep: int, upscale: bool = True, out: int = 64):
        super().__init__()
        self.conv1, self.conv2, self.upscale = _cbr(c_deep, out, 1, inplace=True), _cbr(c_skip, out, 1, inplace=True), upscale

    def forward(self, skip, deep):
        deep = self.conv1(deep)
        if self.upscale:
            deep = F.interpolate(deep, scale_factor=2.0, mode="bilinear", align_corners=True)
        return torch.cat((self.conv2(skip), deep), dim=1)


class _Refine(nn.Module):
    """BlockTypeB: a residual 3×3 then a 3×3 to 64 channels."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.conv1, self.conv2 = _cbr(channels, channels, 3), _cbr(channels, 64, 3)

    def forward(self, x):
        return self.conv2(self.conv1(x) + x)


class _Head(nn.Module):
    """BlockTypeC: dilated 3×3, 3×3, 1×1 to 16 maps."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _cbr(64, 64, 3, dilation=5), _cbr(64, 64, 3), nn.Conv2d(64, 16, 1)

    def forward(self, x):
        return self.conv3(self.conv2(self.conv1(x)))


class MLSDLarge(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = _Backbone()
        self.block15, self.block16 = _Merge(64, 96, upscale=False), _Refine()
        self.block17, self.block18 = _Merge(32, 64), _Refine()
        self.block19, self.block20 = _Merge(24, 64), _Refine()
        self.block21, self.block22 = _Merge(16, 64), _Refine()
        self.block23 = _Head()

    def forward(self, x):
        c1, c2, c3, c4, c5 = self.backbone(x)
        x = self.block16(self.block15(c4, c5))
        x = self.block18(self.block17(c3, x))
        x = self.block20(self.block19(c2, x))
        x = self.block22(self.block21(c1, x))
        return self.block23(x)[:, 7:]


class MLSDTiny(nn.Module):
    """The tiny variant: a 4-stage trunk, two merges, the output upsampled ×2 to half the input size."""

    def __init__(self):
        super().__init__()
        self.backbone = _Backbone(stages=4, taps=(3, 6, 10))
        self.block12, self.block13 = _Merge(32, 64), _Refine()
        self.block14, self.block15 = _Merge(24, 64, out=32), _Refine(64)
        self.block16 = _Head()

    def forward(self, x):
        c2, c3, c4 = self.backbone(x)
        x = self.block15(self.block14(c2, self.block13(self.block12(c3, c4))))
        x = F.interpolate(self.block16(x), scale_factor=2.0, mode="bilinear", align_corners=True)
        return x[:, 7:]
