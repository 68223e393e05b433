"""Tiny U-Nets shaped like each Stable Diffusion family: same classes and key names as the real
models, small enough to test every code path on a CPU in seconds.

`exact=True` gives configs whose head counts and group norms follow the families' conventions, so
an architecture inferred from tensor shapes alone reproduces them exactly; otherwise the configs
deliberately break the conventions (to prove that stored configs are honoured).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel

FAMILIES = ("sd1", "sd2", "sdxl")


def tiny_unet_config(family: str = "sd1", exact: bool = False) -> dict:
    if family == "sd1":
        config = dict(
            block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8, cross_attention_dim=32,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=4,
        )
        if exact:
            config.update(norm_num_groups=32, cross_attention_dim=768, attention_head_dim=8)
    elif family == "sd2":
        config = dict(
            block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8, cross_attention_dim=48,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True,
        )
        if exact:
            config.update(block_out_channels=(64, 128), norm_num_groups=32, cross_attention_dim=1024, attention_head_dim=(1, 2))
    elif family == "sdxl":
        config = dict(
            block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8, cross_attention_dim=64,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
        )
        if exact:
            config.update(block_out_channels=(64, 128), norm_num_groups=32, cross_attention_dim=2048, attention_head_dim=(1, 2),
                          addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return dict(sample_size=16, in_channels=4, out_channels=4, **config)


def tiny_unet(family: str = "sd1", exact: bool = False, seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(**tiny_unet_config(family, exact)).eval()


def unet_inputs(unet: UNet2DConditionModel, batch: int = 2, size: int = 16, vae_scale_factor: int = 2, seed: int = 0):
    """(sample, timestep, encoder_hidden_states, hint, added_cond_kwargs) for a U-Net."""
    g = torch.Generator().manual_seed(seed)
    c = unet.config
    sample = torch.randn(batch, c.in_channels, size, size, generator=g)
    ehs = torch.randn(batch, 7, c.cross_attention_dim, generator=g)
    hint = torch.rand(batch, 3, size * vae_scale_factor, size * vae_scale_factor, generator=g)
    added = None
    if c.addition_embed_type == "text_time":
        pooled = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
        added = {"text_embeds": torch.randn(batch, pooled, generator=g), "time_ids": torch.rand(batch, 6, generator=g) * 64}
    return sample, torch.tensor(37), ehs, hint, added


def randomize_connections(cn, seed: int = 0, std: float = 0.05) -> None:
    """Give a fresh ControlNet's zero convs (and the hint encoder's last conv) random values, so
    that its effect on the U-Net is visible in tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        convs = [*cn.controlnet_down_blocks, cn.controlnet_mid_block, cn.controlnet_cond_embedding.conv_out]
        for conv in convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * std)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * std)
