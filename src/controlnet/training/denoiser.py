"""The trainable ControlNet and the locked U-Net as one module: what DDP wraps and the loss calls.

The noise prediction is `controlled_unet`, the same path sampling takes. Training asks it to run the
locked encoder under `no_grad` (paper §3.2: "the locked encoder needs no gradients"), so only the
decoder runs with autograd, and it can be gradient-checkpointed block by block. With a frozen U-Net,
autograd would record nothing in the encoder anyway (no input there needs a gradient), so the lock
changes little by itself; its gains are the decoder checkpointing and the guarantee
(`benchmarks/train_speed.py` measures both).
"""

from __future__ import annotations

from torch import nn

from controlnet.nn import controlled_unet
from controlnet.nn.unet_parts import unet_decoder, unet_encoder

__all__ = ["ControlledDenoiser", "unet_decoder", "unet_encoder"]


class ControlledDenoiser(nn.Module):
    """noise prediction = locked U-Net(z_t, t, c_t) + ControlNet(z_t, t, c_t, c_f) at the skips."""

    def __init__(self, controlnet: nn.Module, unet: nn.Module, *, only_mid_control: bool = False,
                 split: bool = True, checkpoint_decoder: bool = False):
        super().__init__()
        self.controlnet = controlnet
        self.unet = unet
        self.only_mid_control = only_mid_control
        self.split = split  # run the locked encoder without autograd
        self.checkpoint_decoder = checkpoint_decoder

    def decoder_parameters(self) -> list[nn.Parameter]:
        """What the original code's `sd_locked=False` also trains: decoder blocks and output layers."""
        u = self.unet
        mods = [u.up_blocks, u.conv_out] + [m for m in (u.conv_norm_out,) if m is not None]
        return [p for m in mods for p in m.parameters()]

    def forward(self, sample, timestep, encoder_hidden_states, hint, added_cond_kwargs=None, control_types=None):
        cn_dtype = self.controlnet.dtype  # fp32 master weights; autocast lowers the matmuls where it applies
        union = {} if control_types is None else {"control_types": control_types}  # a union: one type per row
        residuals = self.controlnet(sample.to(cn_dtype), timestep, encoder_hidden_states.to(cn_dtype), hint,
                                    added_cond_kwargs=added_cond_kwargs, **union)
        scales = [0.0] * (residuals.num_connections - 1) + [1.0] if self.only_mid_control else None
        unet_dtype = self.unet.dtype
        return controlled_unet(self.unet, sample.to(unet_dtype), timestep, encoder_hidden_states.to(unet_dtype),
                               [(residuals, scales)], added_cond_kwargs=added_cond_kwargs,
                               lock_encoder=self.split, checkpoint_decoder=self.checkpoint_decoder)
