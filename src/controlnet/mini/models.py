"""The miniature model's parts, built from a MiniConfig with the very classes Stable Diffusion uses."""

from __future__ import annotations

from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from controlnet.mini.config import MiniConfig
from controlnet.tiny import SD_NOISE_SCHEDULE as SCHEDULE  # SD 1.x's
from controlnet.tiny import sd1_three_level_blocks


def build_vae(cfg: MiniConfig) -> AutoencoderKL:
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels, layers_per_block=cfg.vae_layers_per_block,
        norm_num_groups=cfg.vae_norm_groups, sample_size=cfg.image_size,
    )


def build_unet(cfg: MiniConfig) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=cfg.image_size // 8, in_channels=4, out_channels=4,
        **sd1_three_level_blocks(),
        block_out_channels=cfg.unet_channels, layers_per_block=cfg.unet_layers_per_block,
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.attention_heads,
        norm_num_groups=cfg.unet_norm_groups,
    )


def build_text_encoder(cfg: MiniConfig, tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.text_hidden, intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers, num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))


def build_train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE, clip_sample=False)


def build_sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
