"""The miniature Flux-shaped base's parts: diffusers' `FluxTransformer2DModel` (config-driven, the
key names of real Flux files), its flow-matching scheduler, and an XLabs-style ControlNet copied from it."""

from __future__ import annotations

from diffusers import FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

from controlnet.mini.dit_config import MiniDiTConfig
from controlnet.nn.dit_controlnet import FluxControlNet

LATENT_CHANNELS = 4  # the miniature SD's autoencoder
TEXT_WIDTH = 96  # its CLIP: token states and pooled vector


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """Rotary dims (text/time, row, column) summing to the head width, most of them on the two image axes."""
    side = (head_dim - head_dim // 4) // 2 // 2 * 2
    return head_dim - 2 * side, side, side


def build_transformer(config: MiniDiTConfig) -> FluxTransformer2DModel:
    head = config.width // config.heads
    return FluxTransformer2DModel(
        patch_size=1, in_channels=4 * LATENT_CHANNELS, num_layers=config.double_blocks,
        num_single_layers=config.single_blocks, attention_head_dim=head, num_attention_heads=config.heads,
        joint_attention_dim=TEXT_WIDTH, pooled_projection_dim=TEXT_WIDTH, guidance_embeds=False,
        axes_dims_rope=rope_axes(head),
    )


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """Rectified flow, σ from 1 down, no resolution-dependent shift (16 image tokens)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)


def controlnet_from_transformer(transformer: FluxTransformer2DModel, config: MiniDiTConfig) -> FluxControlNet:
    """An XLabs-style ControlNet (pixel hint encoder, cyclic block rule) whose embedders and first
    `controlnet_double_blocks` double (and `controlnet_single_blocks` single) blocks start as copies of the base's (paper §3.2); its outputs start at zero."""
    return FluxControlNet.from_transformer(transformer, config.controlnet_double_blocks, config.controlnet_single_blocks,
                                           pixel_hint=True,
                                           hint_channels=config.controlnet_hint_channels,
                                           hint_widths=config.controlnet_hint_widths)
