"""The miniature Flux-shaped base's parts: diffusers' `FluxTransformer2DModel` (config-driven, the
key names of real Flux files), its flow-matching scheduler, and an XLabs-style ControlNet copied from it."""

from __future__ import annotations

import torch
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


def controlnet_from_transformer(transformer: FluxTransformer2DModel, double_blocks: int) -> FluxControlNet:
    """An XLabs-style ControlNet (pixel hint encoder, cyclic block rule) whose embedders and first
    `double_blocks` blocks start as copies of the base's (paper §3.2); its outputs start at zero."""
    c = transformer.config
    hint_channels = c.in_channels // 4  # the hint encoder lands on the latent grid; 2×2 patches make tokens
    net = FluxControlNet(
        patch_size=2, in_channels=c.in_channels, num_layers=double_blocks, num_single_layers=0,
        attention_head_dim=c.attention_head_dim, num_attention_heads=c.num_attention_heads,
        joint_attention_dim=c.joint_attention_dim, pooled_projection_dim=c.pooled_projection_dim,
        guidance_embeds=c.guidance_embeds, axes_dims_rope=tuple(c.axes_dims_rope),
        conditioning_embedding_channels=hint_channels,
    )
    base = transformer.state_dict()
    copied = {k: v for k, v in base.items() if k.split(".")[0] in ("time_text_embed", "context_embedder", "x_embedder")
              or (k.startswith("transformer_blocks.") and int(k.split(".")[1]) < double_blocks)}
    missing = set(copied) - set(net.state_dict())
    if missing:
        raise ValueError(f"the ControlNet lacks the base's {sorted(missing)[:3]}")
    with torch.no_grad():
        net.load_state_dict(copied, strict=False)
    return net
