"""The trainable ControlNet and the locked U-Net as one module: what DDP wraps and the loss calls.

The U-Net forward is split at the skip connections, where the ControlNet's residuals enter (paper
§3.2: "the locked encoder needs no gradients"): the encoder and middle block run under `no_grad`,
only the decoder runs with autograd, and it can be gradient-checkpointed block by block. With a
frozen U-Net, autograd would record nothing in the encoder anyway (no input there needs a
gradient), so the split changes little by itself; its gains are the decoder checkpointing and the
guarantee (`benchmarks/train_speed.py` measures both).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from controlnet.nn import ControlResiduals, controlled_unet


def unet_encoder(unet, sample, timestep, encoder_hidden_states, added_cond_kwargs=None):
    """Everything of `UNet2DConditionModel.forward` up to and including the middle block."""
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    aug = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs)
    if aug is not None:
        emb = emb + aug
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    ehs = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states,
                                             added_cond_kwargs=added_cond_kwargs)
    h = unet.conv_in(sample)
    skips = (h,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            h, res = block(hidden_states=h, temb=emb, encoder_hidden_states=ehs)
        else:
            h, res = block(hidden_states=h, temb=emb)
        skips += res
    if unet.mid_block is not None:
        if getattr(unet.mid_block, "has_cross_attention", False):
            h = unet.mid_block(h, emb, encoder_hidden_states=ehs)
        else:
            h = unet.mid_block(h, emb)
    return skips, h, emb, ehs


def unet_decoder(unet, skips, h, emb, ehs, residuals: ControlResiduals | None, checkpointing: bool = False):
    """The decoder half, with the ControlNet's residuals added to the skips and the middle output."""
    if residuals is not None:
        skips = tuple(s + r.to(s.dtype) for s, r in zip(skips, residuals.down, strict=True))
        h = h + residuals.mid.to(h.dtype)
    up_factor = 2 ** unet.num_upsamplers
    forward_size = any(d % up_factor for d in skips[0].shape[-2:])
    for i, block in enumerate(unet.up_blocks):
        res, skips = skips[-len(block.resnets):], skips[: -len(block.resnets)]
        size = skips[-1].shape[2:] if forward_size and i < len(unet.up_blocks) - 1 else None
        if getattr(block, "has_cross_attention", False):
            def run(h, *res, block=block, size=size):
                return block(hidden_states=h, temb=emb, res_hidden_states_tuple=res,
                             encoder_hidden_states=ehs, upsample_size=size)
        else:
            def run(h, *res, block=block, size=size):
                return block(hidden_states=h, temb=emb, res_hidden_states_tuple=res, upsample_size=size)
        if checkpointing and torch.is_grad_enabled():
            h = checkpoint(run, h, *res, use_reentrant=False)
        else:
            h = run(h, *res)
    if unet.conv_norm_out is not None:
        h = unet.conv_act(unet.conv_norm_out(h))
    return unet.conv_out(h)


class ControlledDenoiser(nn.Module):
    """noise prediction = locked U-Net(z_t, t, c_t) + ControlNet(z_t, t, c_t, c_f) at the skips."""

    def __init__(self, controlnet: nn.Module, unet: nn.Module, *, only_mid_control: bool = False,
                 split: bool = True, checkpoint_decoder: bool = False):
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet
        self.only_mid_control = only_mid_control
        self.split = split
        self.checkpoint_decoder = checkpoint_decoder

    def decoder_parameters(self) -> list[nn.Parameter]:
        """What the original code's `sd_locked=False` also trains: decoder blocks and output layers."""
        u = self.unet
        mods = [u.up_blocks, u.conv_out] + [m for m in (u.conv_norm_out,) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def forward(self, sample, timestep, encoder_hidden_states, hint, added_cond_kwargs=None):
        cn_dtype = self.controlnet.dtype  # fp32 master weights; autocast lowers the matmuls where it applies
        residuals = self.controlnet(sample.to(cn_dtype), timestep, encoder_hidden_states.to(cn_dtype), hint,
                                    added_cond_kwargs=added_cond_kwargs)
        if self.only_mid_control:
            residuals = residuals.scaled([0.0] * (residuals.num_connections - 1) + [1.0])
        if not self.split:
            return controlled_unet(self.unet, sample, timestep, encoder_hidden_states, [(residuals, None)],
                                   added_cond_kwargs=added_cond_kwargs)
        unet_dtype = self.unet.dtype
        with torch.no_grad():
            skips, h, emb, ehs = unet_encoder(self.unet, sample.to(unet_dtype), timestep,
                                              encoder_hidden_states.to(unet_dtype), added_cond_kwargs)
        return unet_decoder(self.unet, skips, h, emb, ehs, residuals, checkpointing=self.checkpoint_decoder)
