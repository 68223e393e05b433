"""T2I-Adapter (TencentARC, arXiv 2302.08453): a small network that turns the condition image into
one feature map per U-Net level, computed ONCE per image, and added *inside* the U-Net's encoder.

The network is diffusers' `T2IAdapter` (full, light and XL variants); the glue is ours. Where the
features enter is not where a ControlNet's residuals enter (those are added to the skips):

- a cross-attention down block: to the output of its last resnet/attention pair, before that pair's
  skip is taken and before the downsampler (diffusers' `additional_residuals`);
- a plain down block: to the block's output (after its downsampler), which is also its last skip;
- one feature left over whose shape matches the middle block's output (SDXL's 4th): to that output.

`controlnet.nn.unet_parts.encoder_blocks` applies them, step for step as diffusers'
`down_intrablock_additional_residuals`. Several adapters add their scaled features (diffusers'
`MultiAdapter`); the scale is the unit's weight (diffusers' `adapter_conditioning_scale`), and the
unit's `end` is SDXL's `adapter_conditioning_factor` (the adapter acts in steps i < int(N * end)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from controlnet.nn.controlnet import _tile_batch
from controlnet.nn.wrapped import WrappedAdapter


class T2IAdapterNet(WrappedAdapter):
    """A diffusers `T2IAdapter` as a unit's network: `embed_hint(hint)` gives its features."""

    is_adapter = True

    @property
    def hint_channels(self) -> int:
        return self.adapter.config.in_channels

    @property
    def made_for(self) -> str:
        kind = self.adapter.config.adapter_type
        return f"{'SDXL' if kind == 'full_adapter_xl' else 'SD 1.x/2.x'} ({kind}, widths {list(self.adapter.config.channels)})"

    def embed_hint(self, hint: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The features of a (B, C, H, W) hint in [0, 1] at the output image's size."""
        return tuple(self.adapter(hint.to(self.dtype)))

    def forward(self, hint: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.embed_hint(hint)


def is_adapter(net) -> bool:
    return bool(getattr(net, "is_adapter", False))


def intrablock_shapes(unet_config, latent_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(channels, h, w) where each down block takes a feature, then the middle block's output."""
    h, w = latent_hw
    shapes, types, widths = [], unet_config["down_block_types"], unet_config["block_out_channels"]
    for i, (kind, ch) in enumerate(zip(types, widths)):
        last = i == len(types) - 1
        if "CrossAttn" in kind:
            shapes.append((ch, h, w))
        if not last:
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        if "CrossAttn" not in kind:
            shapes.append((ch, h, w))
    return [*shapes, (widths[-1], h, w)]


def check_features(features: Sequence[torch.Tensor], unet_config, latent_hw: tuple[int, int], made_for: str) -> None:
    """Refuse an adapter whose features do not fit this U-Net (diffusers would ignore or mis-add them)."""
    expected = intrablock_shapes(unet_config, latent_hw)
    got = [tuple(f.shape[1:]) for f in features]
    if len(got) > len(expected) or len(got) < len(expected) - 1 or any(g != e for g, e in zip(got, expected)):
        raise ValueError(f"a T2I-Adapter made for {made_for} (features {got}), but this base U-Net takes {expected}: "
                         "use an adapter made for this base model")


def sum_features(adapters: Sequence[tuple[Sequence[torch.Tensor], float]], batch: int) -> list[torch.Tensor] | None:
    """Σ scale · features over the active adapters, each tiled to the sample batch (CFG halves alike)."""
    total = None
    for features, scale in adapters:
        scaled = [_tile_batch(f, batch, "adapter feature") * scale for f in features]
        total = scaled if total is None else [a + b for a, b in zip(total, scaled, strict=True)]
    return total
