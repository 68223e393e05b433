"""diffusers' `UNet2DConditionModel.forward`, cut where the ControlNet's residuals enter.

`controlled_unet` runs these three pieces: conditioning (time / class / SDXL text-time embedding),
the encoder (conv_in, down blocks, middle block: the skips and the middle output), the decoder.
The cut lets training run the locked encoder without autograd and checkpoint the decoder. The
same `encoder_blocks` runs the ControlNet's trainable copy, since it has the same modules.
Step for step what diffusers does, so outputs are bit-identical to calling the U-Net.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint


def unet_conditioning(unet, sample, timestep, encoder_hidden_states, added_cond_kwargs=None, *, class_labels=None,
                      timestep_cond=None, attention_mask=None, encoder_attention_mask=None, cross_attention_kwargs=None):
    """(time embedding, keyword arguments of the cross-attention blocks)."""
    if unet.config.addition_embed_type == "image_hint":
        raise ValueError("U-Nets with addition_embed_type='image_hint' are not supported")
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), timestep_cond)
    class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
    if class_emb is not None:
        emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
    emb = emb + aug if aug is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    ehs = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states,
                                             added_cond_kwargs=added_cond_kwargs)
    attn = dict(encoder_hidden_states=ehs, cross_attention_kwargs=cross_attention_kwargs,
                attention_mask=additive_mask(attention_mask, sample.dtype),
                encoder_attention_mask=additive_mask(encoder_attention_mask, sample.dtype))
    return emb, attn


def additive_mask(mask, dtype):
    return None if mask is None else ((1 - mask.to(dtype)) * -10000.0).unsqueeze(1)


def encoder_blocks(model, h, emb, attn, intrablock=None, blocks=None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """(features of every connection but the last, middle block output) of the down blocks and
    middle block of `model` (a U-Net, or a ControlNet's trainable copy), from `h` after conv_in.
    `intrablock`: T2I-Adapter features, added where diffusers adds `down_intrablock_additional_residuals`
    (`controlnet.nn.t2i_adapter`). `blocks`: only the first that many down blocks and no middle block
    (DeepCache's shallow steps, `controlnet.nn.deep_cache`); the second value is then their output."""
    features, pending = (h,), list(intrablock or ())
    for block in model.down_blocks[:blocks]:
        if _cross(block):
            extra = {"additional_residuals": pending.pop(0).to(h.dtype)} if pending else {}
            h, res = block(hidden_states=h, temb=emb, **attn, **extra)
        else:
            h, res = block(hidden_states=h, temb=emb)
            if pending:  # diffusers adds in place: the block's output is also its last skip
                h = h + pending.pop(0).to(h.dtype)
                res = (*res[:-1], h)
        features += res
    if model.mid_block is not None and blocks is None:
        h = model.mid_block(h, emb, **attn) if _cross(model.mid_block) else model.mid_block(h, emb)
        if pending and pending[0].shape == h.shape:  # SDXL adapters' 4th feature
            h = h + pending.pop(0).to(h.dtype)
    return features, h


def unet_encoder(unet, sample, emb, attn, intrablock=None) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """F(x; Θ): the locked encoder's skip features and middle block output (with T2I-Adapter
    features added inside it when `intrablock` is given)."""
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    return encoder_blocks(unet, unet.conv_in(sample), emb, attn, intrablock)


def unet_decoder(unet, skips, h, emb, attn, checkpointing: bool = False, *, start: int = 0, keep: dict | None = None) -> torch.Tensor:
    """The decoder from the (controlled) skips and middle output; `checkpointing` recomputes each up
    block in the backward pass instead of keeping its activations. DeepCache (`controlnet.nn.deep_cache`):
    `keep` receives what enters the last up block as keep["deep"]; `start` skips the up blocks before
    it (`h` is then their output and `skips` the ones the remaining blocks read)."""
    up_factor = 2**unet.num_upsamplers
    forward_size = any(d % up_factor for d in skips[0].shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        if i < start:
            continue
        if keep is not None and i == len(unet.up_blocks) - 1:
            keep["deep"] = h
        res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if forward_size and i < len(unet.up_blocks) - 1 else None
        extra = attn if _cross(block) else {}

        def run(h, *res, block=block, size=size, extra=extra):
            return block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size, **extra)

        h = checkpoint(run, h, *res, use_reentrant=False) if checkpointing and torch.is_grad_enabled() else run(h, *res)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


def _cross(block) -> bool:
    return getattr(block, "has_cross_attention", False)
