"""The paper's zero convolution (§3.1) and the Gaussian-initialised ablation of §4.2.

A 1×1 conv whose weight and bias start at exactly zero: at step 0 the ControlNet adds nothing, so
the locked model is untouched, yet the gradient w.r.t. the weight (the conv's input) is non-zero,
so it learns from the first step.
"""

from __future__ import annotations

import math

from torch import nn


def zero_conv(in_channels: int, out_channels: int | None = None, kernel_size: int = 1) -> nn.Conv2d:
    """A conv with weight and bias set to exactly 0 ("zero convolution")."""
    conv = nn.Conv2d(in_channels, out_channels or in_channels, kernel_size, padding=kernel_size // 2)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


def gaussian_conv(in_channels: int, out_channels: int | None = None, kernel_size: int = 1) -> nn.Conv2d:
    """The ablation's replacement for a zero conv: Gaussian weights, N(0, 1/fan_in), zero bias.

    With this init the randomly weighted residuals disturb the locked model from step 0, which is
    what the paper's ablation shows to destroy the trainable copy's pretrained backbone.
    """
    conv = nn.Conv2d(in_channels, out_channels or in_channels, kernel_size, padding=kernel_size // 2)
    fan_in = conv.weight[0].numel()
    nn.init.normal_(conv.weight, std=1.0 / math.sqrt(fan_in))
    nn.init.zeros_(conv.bias)
    return conv


def connection_conv(init: str, channels: int) -> nn.Conv2d:
    """One ControlNet→U-Net connection, initialised as `init` ("zero" or "gaussian")."""
    if init == "zero":
        return zero_conv(channels)
    if init == "gaussian":
        return gaussian_conv(channels)
    raise ValueError(f"connection_init must be 'zero' or 'gaussian', got {init!r}")
