"""The controlled U-Net: the paper's equation, once, for sampling and training alike.

diffusers' U-Net would add `down_block_additional_residuals` itself, but it does not check them
(a wrong count is silently truncated by `zip`), cannot combine several ControlNets with
per-connection scales, and cannot leave its encoder out of autograd. So the U-Net runs here in the
three pieces of `unet_parts`, step for step as diffusers runs it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from controlnet.nn.connections import connection_shapes
from controlnet.nn.residuals import ControlResiduals, Scale, sum_residuals
from controlnet.nn.unet_parts import unet_conditioning, unet_decoder, unet_encoder


def controlled_unet(
    unet,
    sample: torch.Tensor,
    timestep,
    encoder_hidden_states: torch.Tensor,
    controls: Sequence[tuple[ControlResiduals, Scale | Sequence[Scale] | None]] = (),
    *,
    added_cond_kwargs: dict[str, torch.Tensor] | None = None,
    lock_encoder: bool = False,
    checkpoint_decoder: bool = False,
    adapter_features: Sequence[torch.Tensor] | None = None,
    keep: dict | None = None,
    **unet_kwargs,
) -> torch.Tensor:
    """The noise prediction of the locked U-Net with ControlNets, paper §3.1 at every connection:

        y_c = F(x; Θ) + Z(F(x + Z(c; Θz1); Θc); Θz2)

    F(x; Θ)                        the locked encoder's features: skips and middle output (`f`, `mid`)
    Z(F(x + Z(c; Θz1); Θc); Θz2)   a ControlNet's residuals (`ControlNet.forward` computes them);
                                   `controls` holds (residuals, scales) pairs, summed (§3.4) into `z`
    y_c                            `f + z` enters the locked decoder

    `scales` per pair: None (1.0), one number, or one number/tensor per connection (the last is the
    middle block's). With no controls this is the plain U-Net; with all-zero residuals (fresh zero
    convs) it equals the plain U-Net bit for bit. Training passes `lock_encoder` (no autograd through
    F(x; Θ), paper §3.2) and may `checkpoint_decoder`. `unet_kwargs`: class_labels, timestep_cond,
    attention_mask, encoder_attention_mask, cross_attention_kwargs, as diffusers takes them.
    `adapter_features` (T2I-Adapters', summed and scaled) enter inside F(x; Θ), not at the skips
    (`controlnet.nn.t2i_adapter`). `keep`: DeepCache's store of the deep features (`controlnet.nn.deep_cache`).
    """
    z = sum_residuals(controls)                                                   # Σ Z(F(x + Z(c; Θz1); Θc); Θz2)
    if z is not None:
        check_residuals(unet, sample, z)
    with torch.no_grad() if lock_encoder else contextlib.nullcontext():
        emb, attn = unet_conditioning(unet, sample, timestep, encoder_hidden_states, added_cond_kwargs, **unet_kwargs)
        f, mid = unet_encoder(unet, sample, emb, attn, adapter_features)          # F(x; Θ)
    if z is not None:
        f = tuple(fi + zi.to(fi.dtype) for fi, zi in zip(f, z.down, strict=True))  # y_c = F(x; Θ) + Z(...)
        mid = mid + z.mid.to(mid.dtype)
    return unet_decoder(unet, f, mid, emb, attn, checkpointing=checkpoint_decoder, keep=keep)


def controlled_unet_xs(coupled, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, hint: torch.Tensor,
                       scale: float = 1.0, *, apply_control: bool = True, added_cond_kwargs=None) -> torch.Tensor:
    """The noise prediction of a U-Net coupled with a ControlNet-XS (diffusers' `UNetControlNetXSModel`,
    `coupled`). Not the paper's y_c = F(x; Θ) + Z(...): the two encoders exchange features both ways at
    every sub-block k (conv_in; each resnet+attention pair; each downsampler; the middle block):

        c_0 = conv_in_c(x) + E(c),          h_0 = conv_in(x) + s · C2B_0(c_0)
        c_k = G_k([c_{k-1}, B2C_k(h_{k-1})]; Θc)          (the control encoder reads the base's features)
        h_k = F_k(h_{k-1}; Θ) + s · C2B_k(c_k)            (the base encoder gets the control's back)
        decoder sub-block j:  h ← h + s · C2B'_j(c_skip_j), then the base's own skip as usual

    x           the noisy latent;  c  the hint;  E  the hint encoder (`controlnet_cond_embedding`)
    F_k, Θ      the locked base U-Net's sub-block k and weights;  h_k its features
    G_k, Θc     the control encoder's sub-block k (narrower: `size_ratio`) and weights;  c_k its features
    B2C_k       base → control convs (`base_to_ctrl`), concatenated to the control's input
    C2B_k       control → base zero convs (`ctrl_to_base`; `up_connections` in the decoder, fed the
                control's skips c_skip_j)
    s           the conditioning scale (the unit's weight); `apply_control=False` runs the base alone
    """
    return coupled(sample, timestep, encoder_hidden_states, controlnet_cond=hint, conditioning_scale=scale,
                   added_cond_kwargs=added_cond_kwargs, apply_control=apply_control, return_dict=False)[0]


def unet_connection_shapes(unet, latent_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """(channels, h, w) of every skip connection, then the middle block, for a latent of `latent_hw`."""
    return connection_shapes(unet.config, latent_hw)


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
