"""DeepCache (Ma, Fang, Wang 2023, arXiv 2312.00858) for the controlled U-Net.

Adjacent denoising steps compute nearly the same deep features, so a full step keeps what enters
the U-Net's last up block (`controlled_unet(..., keep=)`), and the steps after it run only the
shallowest level on those kept features:

    eps ≈ D_last(deep_kept, skips_0 + Σ Z_0)      skips_0: conv_in and the first down block's outputs

D_last is the last up block (+ output head), skips_0 the connections it reads (2 in the miniature
U-Net, 3 in SD 1.5 / SDXL), Σ Z_0 the ControlNets' residuals on those connections only, so each
ControlNet also runs only its conv_in, hint injection and first down block. The paper's uniform
1:N schedule; the policy (which steps are full) is `controlnet.pipeline.reuse.full_step`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from controlnet.nn.controlnet import ControlNet, _tile_batch
from controlnet.nn.unet_parts import encoder_blocks, unet_conditioning, unet_decoder


def shallow_count(unet) -> int:
    """How many connections (shallowest first) the last up block reads."""
    return len(unet.up_blocks[-1].resnets)


def shallow_unet(unet, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, deep: torch.Tensor,
                 residuals: Sequence[torch.Tensor] | None, *, added_cond_kwargs=None, adapter_features=None) -> torch.Tensor:
    """The noise prediction of a cached step: conv_in and the first down block, `residuals` (summed and
    scaled, one per shallow connection) added to their skips, then the last up block on `deep`."""
    emb, attn = unet_conditioning(unet, sample, timestep, encoder_hidden_states, added_cond_kwargs)
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    skips, _ = encoder_blocks(unet, unet.conv_in(sample), emb, attn, adapter_features, blocks=1)
    skips = skips[: shallow_count(unet)]
    if residuals is not None:
        skips = tuple(f + z.to(f.dtype) for f, z in zip(skips, residuals, strict=True))
    return unet_decoder(unet, skips, deep, emb, attn, start=len(unet.up_blocks) - 1)


def shallow_control(cn, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor, hint_embedding,
                    count: int, added_cond_kwargs=None) -> tuple[torch.Tensor, ...]:
    """A ControlNet's unscaled residuals on the first `count` connections. A plain full-copy ControlNet
    runs only as deep as they need; other kinds (union, lite, global pooling) run whole."""
    plain = type(cn) is ControlNet and cn.config.copy == "full" and not cn.config.global_pool_conditions
    if not plain:
        return cn(sample, timestep, encoder_hidden_states, hint_embedding=hint_embedding,
                  added_cond_kwargs=added_cond_kwargs).down[:count]
    hint = _tile_batch(hint_embedding, sample.shape[0], "hint")
    h = cn.conv_in(sample) + hint.to(sample.dtype)
    emb = cn.time_embed(sample, timestep, encoder_hidden_states, added_cond_kwargs)
    attn = dict(encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=None, attention_mask=None)
    features, _ = encoder_blocks(cn, h, emb, attn, blocks=1)
    return tuple(conv(f) for conv, f in zip(cn.controlnet_down_blocks[:count], features[:count], strict=True))
