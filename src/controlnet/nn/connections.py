"""The ControlNet→U-Net connections, derived once from a config: everything else follows from this list.

A U-Net encoder with levels of widths `block_out_channels` and `layers_per_block` (L) resnets per
level hands its decoder one skip connection per `conv_in`, per resnet (+ attention) and per
downsampler, then the middle block's output. The ControlNet adds one residual to each (paper §3.2):
13 for SD 1.x/2.x, 10 for SDXL. From this list come the residual shapes (`connection_shapes`), the
control modes' levels, the lite copy's convs, the zero convs' widths and the original key layout,
where connection i is `input_blocks.i` and `zero_convs.i` (the middle block: `middle_block`,
`middle_block_out`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, NamedTuple

Kind = Literal["conv_in", "resnet", "downsampler", "mid"]


class Connection(NamedTuple):
    index: int  # position among the residuals (diffusers' order); the original `input_blocks` index
    kind: Kind
    channels: int
    level: int  # downsampling level: 0 at the latent resolution
    stride: int  # 2 where the feature comes out of a downsampler (what the lite copy's conv does)
    block: int  # the down block (level) that produces it; -1 for conv_in
    layer: int  # the resnet's index within its block; 0 otherwise


def _field(config, key: str):
    return config[key] if isinstance(config, Mapping) else getattr(config, key)


def connections(config) -> list[Connection]:
    """Every connection of a U-Net or ControlNet `config` (a dict, a diffusers config, or a model
    with `.config`), shallow to deep; the last one is the middle block's."""
    config = getattr(config, "config", config)
    widths, per_level = list(_field(config, "block_out_channels")), int(_field(config, "layers_per_block"))
    out = [Connection(0, "conv_in", widths[0], 0, 1, -1, 0)]
    for b, width in enumerate(widths):
        out += [Connection(len(out) + i, "resnet", width, b, 1, b, i) for i in range(per_level)]
        if b < len(widths) - 1:
            out.append(Connection(len(out), "downsampler", width, b + 1, 2, b, 0))
    out.append(Connection(len(out), "mid", widths[-1], len(widths) - 1, 1, len(widths) - 1, 0))
    return out


def connection_shapes(config, latent_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(channels, h, w) of every connection for a latent of `latent_hw` (a downsampler rounds up)."""
    def side(n: int, level: int) -> int:
        for _ in range(level):
            n = (n + 1) // 2
        return n

    return [(c.channels, side(latent_hw[0], c.level), side(latent_hw[1], c.level)) for c in connections(config)]
