"""The merge network of BoostingMonocularDepth (LeReS++ / boost, `latest_net_G.pth`): pix2pix's
"unet_1024" generator without normalisation, under the published parameter names (`model.model.<i>...`).

Ten 4x4 stride-2 downsamplings from 1024x1024 (two channels: the low- and high-resolution depth) to
1x1, ten transposed convolutions back to one channel through tanh, skip connections at every level.
The published code's block starts with an in-place LeakyReLU on its input, so the skip it concatenates
carries the rectified input (made explicit here). Only the outermost transposed convolution has a bias.
The base width (64 published) is read from the file, so the tests' reduced file runs the same code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from controlnet.errors import InputError

LEVELS = 10  # unet_1024
FIRST = "model.model.0.weight"


class UnetBlock(nn.Module):
    """One level. `model` keeps the published layout (parameter-free slots as Identity) so names match."""

    def __init__(self, outer: int, inner: int, inputs: int | None = None, sub: UnetBlock | None = None):
        super().__init__()
        self.outermost, self.innermost = inputs is not None, sub is None
        down = nn.Conv2d(inputs or outer, inner, 4, 2, 1, bias=False)
        up = nn.ConvTranspose2d(inner if self.innermost else inner * 2, outer, 4, 2, 1, bias=self.outermost)
        if self.outermost:
            layers = [down, sub, nn.Identity(), up]
        elif self.innermost:
            layers = [nn.Identity(), down, nn.Identity(), up]
        else:
            layers = [nn.Identity(), down, nn.Identity(), sub, nn.Identity(), up]
        self.model = nn.Sequential(*layers)

    def forward(self, x):  # in place on tensors no one else reads (the parent's fresh output), as published
        if self.outermost:
            down, sub, _, up = self.model
            return up(sub(down(x)).relu_()).tanh_()
        x = F.leaky_relu_(x, 0.2)
        y = self.model[1](x)
        if not self.innermost:
            y = self.model[3](y)
        return torch.cat([x, self.model[-1](y.relu_())], 1)


class MergeNet(nn.Module):
    """(1, 2, 1024, 1024) in [-1, 1] -> (1, 1, 1024, 1024) in [-1, 1]."""

    def __init__(self, width: int = 64):
        super().__init__()
        block = UnetBlock(width * 8, width * 8)
        for _ in range(LEVELS - 5):
            block = UnetBlock(width * 8, width * 8, sub=block)
        for factor in (4, 2, 1):
            block = UnetBlock(width * factor, width * factor * 2, sub=block)
        self.model = UnetBlock(1, width, inputs=2, sub=block)

    def forward(self, x):
        return self.model(x)


def build_merge(state: dict, what: str, path: str):
    """(MergeNet of the file's width, on the meta device; the state) for local_models.load_converted_network."""
    first = state.get(FIRST)
    if first is None or first.dim() != 4 or tuple(first.shape[1:]) != (2, 4, 4):
        raise InputError(f"{path} is not a {what} weight file: no 2-channel 4x4 input convolution {FIRST}")
    with torch.device("meta"):
        return MergeNet(int(first.shape[0])), state
