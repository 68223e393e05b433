"""ControlNet-lite (paper §4.2 ablation): each block of the trainable copy replaced by a single conv.

It produces features with the same widths and resolutions as the full copy's connections (one conv
per connection, stride 2 where the full copy downsamples), so the same zero convs connect it to the
locked U-Net; it sees neither the time step nor the prompt.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from controlnet.nn.connections import Connection


class LiteEncoder(nn.Module):
    def __init__(self, links: list[Connection]):
        super().__init__()
        # links[0] is conv_in's output; links[i+1] is produced by convs[i]; the last is the middle block's
        down, mid = links[:-1], links[-1]
        self.convs = nn.ModuleList(
            nn.Conv2d(a.channels, b.channels, 3, stride=b.stride, padding=1) for a, b in zip(down[:-1], down[1:])
        )
        self.mid = nn.Conv2d(down[-1].channels, mid.channels, 3, padding=1)

    def forward(self, h: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        features = [h]
        for conv in self.convs:
            h = F.silu(conv(h))
            features.append(h)
        return features, F.silu(self.mid(h))
