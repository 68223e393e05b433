"""NormalBAE (Bae et al. 2021, "Estimating and exploiting the aleatoric uncertainty in surface normal
estimation"), as published in `scannet.pt`: an EfficientNet-B5 encoder (the TensorFlow-ported AdvProp
variant: 'SAME' padding on strided convolutions, batch-norm eps 1e-3) and a decoder that refines the
normal map from 1/8 to full resolution with per-pixel MLPs. Tensor names follow the file so it loads
strictly; only the inference path is built (the training-time point sampling is not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
# EfficientNet-B5 stages: (repeats, kernel, stride, expansion, output channels), widths ×1.6, depths ×2.2
B5_STAGES = ((3, 3, 1, 1, 24), (5, 3, 2, 6, 40), (5, 5, 2, 6, 64), (7, 3, 2, 6, 128),
             (7, 5, 1, 6, 176), (9, 5, 2, 6, 304), (3, 3, 1, 6, 512))
STEM, HEAD = 48, 2048
SE_RATIO = 0.25


class Conv2dSame(nn.Conv2d):
    """TensorFlow's 'SAME' padding for strided convolutions: the padding depends on the input size,
    with the odd pixel at the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            pad = max((-(size // -s) - 1) * s + k - size, 0)
            pads += [pad // 2, pad - pad // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, 1, self.groups)


def conv(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    if stride == 1:  # 'SAME' with stride 1 and an odd kernel is symmetric
        return nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, kernel, stride, groups=groups, bias=False)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.conv_expand(F.silu(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class DepthwiseSeparable(nn.Module):
    """The expansion-1 block of stage 1: depthwise conv, SE, pointwise projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int):
        super().__init__()
        self.conv_dw = conv(cin, cin, kernel, stride, groups=cin)
        self.bn1 = nn.BatchNorm2d(cin, eps=BN_EPS)
        self.se = SqueezeExcite(cin, int(cin * SE_RATIO))
        self.conv_pw = conv(cin, cout, 1)
        self.bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv_pw(self.se(F.silu(self.bn1(self.conv_dw(x))))))
        return y + x if self.residual else y


class InvertedResidual(nn.Module):
    """MBConv: pointwise expansion, depthwise conv, SE (reduced from the block's input width), projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expansion: int):
        super().__init__()
        mid = cin * expansion
        self.conv_pw = conv(cin, mid, 1)
        self.bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.conv_dw = conv(mid, mid, kernel, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self.se = SqueezeExcite(mid, int(cin * SE_RATIO))
        self.conv_pwl = conv(mid, cout, 1)
        self.bn3 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.silu(self.bn1(self.conv_pw(x)))
        y = self.se(F.silu(self.bn2(self.conv_dw(y))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.residual else y


def b5_stage(cin: int, repeats: int, kernel: int, stride: int, expansion: int, cout: int) -> nn.Sequential:
    block = DepthwiseSeparable if expansion == 1 else InvertedResidual
    extra = () if expansion == 1 else (expansion,)
    return nn.Sequential(*(block(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, *extra)
                           for i in range(repeats)))


class EfficientNetB5(nn.Module):
    """The encoder; `forward` gives the features the decoder reads: stages 1, 2, 3, 5 and the head
    convolution (before its batch norm, which the file holds but NormalBAE never applies)."""

    def __init__(self):
        super().__init__()
        self.conv_stem = conv(3, STEM, 3, 2)
        self.bn1 = nn.BatchNorm2d(STEM, eps=BN_EPS)
        stages, cin = [], STEM
        for repeats, kernel, stride, expansion, cout in B5_STAGES:
            stages.append(b5_stage(cin, repeats, kernel, stride, expansion, cout))
            cin = cout
        self.blocks = nn.Sequential(*stages)
        self.conv_head = conv(cin, HEAD, 1)
        self.bn2 = nn.BatchNorm2d(HEAD, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = F.silu(self.bn1(self.conv_stem(x)))
        taps = []
        for stage in self.blocks:
            x = stage(x)
            taps.append(x)
        return [taps[0], taps[1], taps[2], taps[4], self.conv_head(x)]


class UpSampleBN(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self._net = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU(),
                                  nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.LeakyReLU())

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self._net(torch.cat([up, skip], dim=1))


def pixel_mlp(cin: int) -> nn.Sequential:
    """Per-pixel refinement (1×1 Conv1d layers over the flattened map), as the published file names them."""
    return nn.Sequential(nn.Conv1d(cin, 128, 1), nn.ReLU(), nn.Conv1d(128, 128, 1), nn.ReLU(),
                         nn.Conv1d(128, 128, 1), nn.ReLU(), nn.Conv1d(128, 4, 1))


def normalize_prediction(out: torch.Tensor) -> torch.Tensor:
    """Unit normal (x, y, z) and a positive concentration κ = elu + 1.01, as the reference forms them."""
    x, y, z, kappa = torch.split(out, 1, dim=1)
    norm = torch.sqrt(x**2.0 + y**2.0 + z**2.0) + 1e-10
    return torch.cat([x / norm, y / norm, z / norm, F.elu(kappa) + 1.0 + 0.01], dim=1)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class NormalDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv2 = nn.Conv2d(HEAD, HEAD, 1)
        self.up1 = UpSampleBN(HEAD + 176, 1024)
        self.up2 = UpSampleBN(1024 + 64, 512)
        self.up3 = UpSampleBN(512 + 40, 256)
        self.up4 = UpSampleBN(256 + 24, 128)
        self.out_conv_res8 = nn.Conv2d(512, 4, 3, padding=1)
        self.out_conv_res4 = pixel_mlp(512 + 4)
        self.out_conv_res2 = pixel_mlp(256 + 4)
        self.out_conv_res1 = pixel_mlp(128 + 4)

    @staticmethod
    def refine(mlp: nn.Sequential, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        both = torch.cat([upsample2(features), upsample2(coarse)], dim=1)
        b, c, h, w = both.shape
        return normalize_prediction(mlp(both.view(b, c, -1))).view(b, 4, h, w)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        block0, block1, block2, block3, head = features
        d2 = self.up2(self.up1(self.conv2(head), block3), block2)
        d3 = self.up3(d2, block1)
        d4 = self.up4(d3, block0)
        out = normalize_prediction(self.out_conv_res8(d2))
        out = self.refine(self.out_conv_res4, d2, out)
        out = self.refine(self.out_conv_res2, d3, out)
        return self.refine(self.out_conv_res1, d4, out)


class NormalBae(nn.Module):
    """Image normalised with ImageNet statistics -> (B, 4, H, W): unit normal (x, y, z) and κ."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.ModuleDict({"original_model": EfficientNetB5()})
        self.decoder = NormalDecoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder["original_model"](x))
