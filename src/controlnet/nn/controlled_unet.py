"""Running the locked U-Net with ControlNet residuals added to its skip connections.

diffusers' `UNet2DConditionModel` already adds `down_block_additional_residuals` to the skip
connections and `mid_block_additional_residual` to the middle block's output; what it does not do
is check them (a wrong count is silently truncated by `zip`) or combine several ControlNets with
per-connection scales. That is done here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from controlnet.nn.residuals import ControlResiduals, Scale, sum_residuals


def unet_connection_shapes(unet, latent_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(channels, h, w) of every skip connection, then the middle block, for a latent of `latent_hw`."""
    c = unet.config
    h, w = latent_hw
    shapes = [(c.block_out_channels[0], h, w)]
    for i, ch in enumerate(c.block_out_channels):
        shapes += [(ch, h, w)] * c.layers_per_block
        if i < len(c.block_out_channels) - 1:
            h, w = (h + 1) // 2, (w + 1) // 2
            shapes.append((ch, h, w))
    shapes.append((c.block_out_channels[-1], h, w))
    return shapes


def check_residuals(unet, sample: torch.Tensor, residuals: ControlResiduals) -> None:
    """Fail loudly when a ControlNet does not fit this U-Net (diffusers would silently truncate)."""
    expected = unet_connection_shapes(unet, tuple(sample.shape[-2:]))
    got = [tuple(r.shape[1:]) for r in (*residuals.down, residuals.mid)]
    if len(got) != len(expected):
        raise ValueError(
            f"the ControlNet gives {len(got)} residuals but this U-Net has {len(expected)} connections: "
            "the ControlNet was made for a different base model family"
        )
    for i, (g, e) in enumerate(zip(got, expected)):
        pooled = g[1:] == (1, 1)
        if g[0] != e[0] or not (pooled or g[1:] == e[1:]):
            raise ValueError(
                f"ControlNet residual {i} has shape {g}, the U-Net expects {e}: "
                "the ControlNet was made for a different base model"
            )


def controlled_unet(
    unet,
    sample: torch.Tensor,
    timestep,
    encoder_hidden_states: torch.Tensor,
    controls: Sequence[tuple[ControlResiduals, Scale | Sequence[Scale] | None]] = (),
    *,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    **unet_kwargs,
) -> torch.Tensor:
    """The U-Net's noise prediction with every (residuals, scales) pair added.

    `scales` per pair: None (1.0), one number, or one number/tensor per connection (13 for SD 1.x,
    10 for SDXL; the last is the middle block's). With no controls this is the plain U-Net, and
    with all-zero residuals (fresh zero convs) it equals the plain U-Net bit for bit.
    """
    total = sum_residuals(controls)
    if total is None:
        return unet(sample, timestep, encoder_hidden_states, added_cond_kwargs=added_cond_kwargs,
                    return_dict=False, **unet_kwargs)[0]
    check_residuals(unet, sample, total)
    dtype = sample.dtype
    return unet(
        sample,
        timestep,
        encoder_hidden_states,
        added_cond_kwargs=added_cond_kwargs,
        down_block_additional_residuals=tuple(r.to(dtype) for r in total.down),
        mid_block_additional_residual=total.mid.to(dtype),
        return_dict=False,
        **unet_kwargs,
    )[0]
