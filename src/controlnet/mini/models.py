"""The miniature model's parts, built from a MiniConfig with the very classes Stable Diffusion uses."""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from controlnet.mini.config import MiniConfig
from controlnet.tiny import SD_NOISE_SCHEDULE as SCHEDULE  # SD 1.x's
from controlnet.tiny import sd1_three_level_blocks


def build_vae(config: MiniConfig) -> AutoencoderKL:
    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=config.vae_channels, layers_per_block=config.vae_layers_per_block,
        norm_num_groups=config.vae_norm_groups, sample_size=config.image_size,
    )


def build_unet(config: MiniConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=config.image_size // 8, in_channels=4, out_channels=4,
        **sd1_three_level_blocks(),
        block_out_channels=config.unet_channels, layers_per_block=config.unet_layers_per_block,
        cross_attention_dim=config.text_hidden, attention_head_dim=config.attention_heads,
        norm_num_groups=config.unet_norm_groups,
    )


def build_text_encoder(config: MiniConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=config.text_hidden, intermediate_size=4 * config.text_hidden,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        max_position_embeddings=config.max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def build_train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, clip_sample=False)


def build_sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
