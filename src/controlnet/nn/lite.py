"""ControlNet-lite (paper §4.2 ablation): each block of the trainable copy replaced by a single conv.

It produces features with the same widths and resolutions as the full copy's skip connections, so
the same zero convs connect it to the locked U-Net; it sees neither the time step nor the prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LiteEncoder(nn.Module):
    def __init__(self, channels: list[int], mid_channels: int, strides: list[int]):
        super().__init__()
        # channels[0] is conv_in's output; channels[i+1] is produced by convs[i] with strides[i]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, 3, stride=s, padding=1) for c_in, c_out, s in zip(channels[:-1], channels[1:], strides)
        )
        self.mid = nn.Conv2d(channels[-1], mid_channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = [h]
        for conv in self.convs:
            h = F.silu(conv(h))
            features.append(h)
        return features, F.silu(self.mid(h))
