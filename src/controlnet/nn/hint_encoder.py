"""E(·): the small conv net that turns a full-resolution condition image into a latent-size feature.

Two layouts:
- "code" (default): the layout of the released code and of every public checkpoint — conv 3×3 in,
  then pairs (3×3 conv, 3×3 stride-2 conv) between the widths 16/32/96/256, SiLU after each, and a
  zero-initialised 3×3 conv out to the model width. Key names follow diffusers'
  `ControlNetConditioningEmbedding` (`conv_in`, `blocks.N`, `conv_out`); the original layout's
  `input_hint_block.{0,2,...,14}` map onto them one to one.
- "paper": the text of §3.2 — 4×4 convs with ReLU, widths 16/32/64/128, Gaussian init, then a
  zero-initialised conv out. It fits no public checkpoint; kept for research.

The number of stride-2 convs is log2 of the base model's VAE scale factor, so the output always
lands on the latent grid (8 for Stable Diffusion, anything else for other autoencoders).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from controlnet.nn.zero_conv import zero_conv

CODE_WIDTHS = (16, 32, 96, 256)
PAPER_WIDTHS = (16, 32, 64, 128)


def default_widths(kind: str, vae_scale_factor: int) -> tuple[int, ...]:
    """Widths whose count gives log2(vae_scale_factor) stride-2 convs."""
    downs = int(math.log2(vae_scale_factor))
    if 2**downs != vae_scale_factor:
        raise ValueError(f"vae_scale_factor must be a power of two, got {vae_scale_factor}")
    base = CODE_WIDTHS if kind == "code" else PAPER_WIDTHS
    widths = list(base[: downs + 1])
    while len(widths) < downs + 1:
        widths.append(base[-1])
    return tuple(widths)


class HintEncoder(nn.Module):
    def __init__(
        self,
        out_channels: int,
        in_channels: int = 3,
        widths: tuple[int, ...] = CODE_WIDTHS,
        kind: str = "code",
    ):
        super().__init__()
        if kind not in ("code", "paper"):
            raise ValueError(f"hint encoder kind must be 'code' or 'paper', got {kind!r}")
        self.kind = kind
        self.activation = F.silu if kind == "code" else F.relu
        k = 3 if kind == "code" else 4
        self.conv_in = nn.Conv2d(in_channels, widths[0], k, padding=1 if k == 3 else "same")
        self.blocks = nn.ModuleList()
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            self.blocks.append(nn.Conv2d(w_in, w_in, k, padding=1 if k == 3 else "same"))
            # stride 2: padding 1 halves the size exactly for k=3 and k=4 alike
            self.blocks.append(nn.Conv2d(w_in, w_out, k, stride=2, padding=1))
        self.conv_out = zero_conv(widths[-1], out_channels, kernel_size=3)
        if kind == "paper":
            for conv in [self.conv_in, *self.blocks]:
                nn.init.normal_(conv.weight, std=1.0 / math.sqrt(conv.weight[0].numel()))
                nn.init.zeros_(conv.bias)

    @property
    def downscale_factor(self) -> int:
        return 2 ** (len(self.blocks) // 2)

    def forward(self, hint: torch.Tensor) -> torch.Tensor:
        h = self.activation(self.conv_in(hint))
        for block in self.blocks:
            h = self.activation(block(h))
        return self.conv_out(h)
