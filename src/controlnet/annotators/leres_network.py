"""LeReS's depth network (ResNeXt-101 32x8d encoder, FTB/FFM decoder) under the parameter names of the
published `res101.pth` (its "depth_model" state: `depth_model.encoder_modules.encoder.*` and
`depth_model.decoder_modules.*`).

The sizes (blocks per stage, groups, group width, decoder widths) are read from the state, so the same
code runs the published file (blocks 3/4/23/3, 32 groups of 8 at the first stage, decoder 256/512) and the
reduced files of the tests; `load_strictly` then checks that every tensor fits.

controlnet_aux's LeresDetector (like sd-webui-controlnet) never puts the network in eval mode, so its batch
norms normalise each picture by its own statistics; the stored running statistics are loaded but unused.
Kept (BatchStatNorm), since the maps the depth ControlNets were trained on came from that code.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from controlnet.errors import InputError

PLANES = (64, 128, 256, 512)  # ResNet stage widths before the 4x expansion (fixed by the decoder's 256..2048 inputs)
EXPANSION = 4
PREFIX = "depth_model."


class BatchStatNorm(nn.BatchNorm2d):
    """BatchNorm2d as in training mode: normalised by the batch's own mean and (biased) variance."""

    def forward(self, x):
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


class Bottleneck(nn.Module):
    """ResNeXt block: 1x1, grouped 3x3 (stride here), 1x1 to 4x planes; projected shortcut where the shape changes."""

    def __init__(self, inplanes: int, planes: int, width: int, groups: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = BatchStatNorm(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = BatchStatNorm(width)
        self.conv3 = nn.Conv2d(width, planes * EXPANSION, 1, bias=False)
        self.bn3 = BatchStatNorm(planes * EXPANSION)
        self.downsample = None
        if stride != 1 or inplanes != planes * EXPANSION:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * EXPANSION, 1, stride, bias=False),
                                            BatchStatNorm(planes * EXPANSION))

    def forward(self, x):  # in place on fresh tensors, as the published code: the same values, fewer large copies
        out = self.bn1(self.conv1(x)).relu_()
        out = self.bn2(self.conv2(out)).relu_()
        out = self.bn3(self.conv3(out))
        out += x if self.downsample is None else self.downsample(x)
        return out.relu_()


class ResNeXt(nn.Module):
    """The encoder: stem and four stages; returns the four stage outputs (1/4 .. 1/32)."""

    def __init__(self, blocks: tuple[int, ...], groups: int, group_width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = BatchStatNorm(64)
        inplanes = 64
        for index, (planes, count) in enumerate(zip(PLANES, blocks)):
            width = planes * group_width // 64 * groups
            stage = [Bottleneck(inplanes, planes, width, groups, 1 if index == 0 else 2)]
            stage += [Bottleneck(planes * EXPANSION, planes, width, groups) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
            inplanes = planes * EXPANSION

    def forward(self, x):
        x = F.max_pool2d(self.bn1(self.conv1(x)).relu_(), 3, 2, 1)
        features = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            features.append(x)
        return features


class FTB(nn.Module):
    """Feature transfer block. The published code's branch starts with an in-place ReLU, which also rectifies
    the shortcut: out = relu(y + branch(y)) with y = relu(conv1(x))."""

    def __init__(self, inchannels: int, mid: int):
        super().__init__()
        self.conv1 = nn.Conv2d(inchannels, mid, 3, padding=1)
        self.conv_branch = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1), BatchStatNorm(mid),
                                         nn.ReLU(inplace=True), nn.Conv2d(mid, mid, 3, padding=1))

    def forward(self, x):
        y = self.conv1(x).relu_()
        out = self.conv_branch(y)
        out += y
        return out.relu_()


def upsample2(x):
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


class FFM(nn.Module):
    """Feature fusion: the skip feature through an FTB, plus the coarser path, through an FTB, upsampled 2x."""

    def __init__(self, inchannels: int, mid: int):
        super().__init__()
        self.ftb1 = FTB(inchannels, mid)
        self.ftb2 = FTB(mid, mid)

    def forward(self, low, high):
        fused = self.ftb1(low)
        fused += high
        return upsample2(self.ftb2(fused))


class Decoder(nn.Module):
    def __init__(self, mid: int, top: int):
        super().__init__()
        self.conv = FTB(PLANES[3] * EXPANSION, top)
        self.conv1 = nn.Conv2d(top, mid, 3, padding=1)
        self.ffm2, self.ffm1, self.ffm0 = (FFM(planes * EXPANSION, mid) for planes in PLANES[2::-1])
        self.outconv = nn.Module()
        self.outconv.adapt_conv = nn.Sequential(nn.Conv2d(mid, mid // 2, 3, padding=1), BatchStatNorm(mid // 2),
                                                nn.ReLU(inplace=True), nn.Conv2d(mid // 2, 1, 3, padding=1))

    def forward(self, features):
        x = upsample2(self.conv1(self.conv(features[3])))
        x = self.ffm0(features[0], self.ffm1(features[1], self.ffm2(features[2], x)))
        return upsample2(self.outconv.adapt_conv(x))


class LeresDepth(nn.Module):
    """Image (1, 3, H, W), H and W multiples of 32 -> relative depth (1, 1, H, W), larger = farther."""

    def __init__(self, blocks=(3, 4, 23, 3), groups: int = 32, group_width: int = 8, mid: int = 256, top: int = 512):
        super().__init__()
        self.depth_model = nn.Module()
        self.depth_model.encoder_modules = nn.Module()
        self.depth_model.encoder_modules.encoder = ResNeXt(tuple(blocks), groups, group_width)
        self.depth_model.decoder_modules = Decoder(mid, top)

    def forward(self, x):
        return self.depth_model.decoder_modules(self.depth_model.encoder_modules.encoder(x))


def leres_sizes(state: dict, what: str, path: str) -> dict:
    """LeresDepth's keyword arguments from the shapes in a LeReS state; an InputError when it is not one."""
    encoder, decoder = PREFIX + "encoder_modules.encoder.", PREFIX + "decoder_modules."
    try:
        blocks = tuple(1 + max(int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(encoder)}layer{i}\.(\d+)\.", k)))
                       for i in range(1, 5))
        width, per_group = state[encoder + "layer1.0.conv2.weight"].shape[:2]
        top, mid = state[decoder + "conv.conv1.weight"].shape[0], state[decoder + "conv1.weight"].shape[0]
    except KeyError as exc:
        raise InputError(f"{path} is not a {what} weight file: no LeReS encoder and decoder (no {exc})") from None
    except ValueError:  # max() of no block: a stage missing
        raise InputError(f"{path} is not a {what} weight file: no LeReS encoder stages ({encoder}layer1-4)") from None
    groups = width // per_group
    return {"blocks": blocks, "groups": groups, "group_width": width // groups, "mid": mid, "top": top}


def build_leres(state: dict, what: str, path: str):
    """(LeresDepth sized for `state`, on the meta device; the state) for local_models.load_converted_network."""
    with torch.device("meta"):
        return LeresDepth(**leres_sizes(state, what, path)), state
