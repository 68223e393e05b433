"""Random models shaped like Stable Diffusion: the one place their configs are written.

Tests and benchmarks build U-Nets, autoencoders and text encoders from these dicts (the trainer's
`build_base`, `tests/tiny_models.py`, the benchmarks); the miniature model's noise schedule is
SD 1.x's, also written here once. Same classes and key names as the real models, small enough to
test every code path on a CPU in seconds.

`exact=True` gives U-Net configs whose head counts and group norms follow the families'
conventions, so an architecture inferred from tensor shapes alone reproduces them exactly;
otherwise the configs deliberately break the conventions (to prove that stored configs are honoured).
"""

from __future__ import annotations

import copy

import torch

FAMILIES = ("sd1", "sd2", "sdxl")
BYTE_VOCAB = 514  # the offline byte-level CLIP BPE: 2 special tokens + 256 bytes + 256 word-final bytes

# Stable Diffusion 1.x's noise schedule (the miniature model and the random bases train with it)
SD_NOISE_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

_DOWN_UP_3 = dict(down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"))

# autoencoders by scale factor: 8 as in SD (4 levels), 2 for the trainer's 32-px tests (16-px latents)
_TINY_VAES = {
    8: dict(block_out_channels=(8, 8, 16, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4,
            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1),
    2: dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, latent_channels=4,
            down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32),
}


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


def tiny_vae_config(scale_factor: int = 8) -> dict:
    """An AutoencoderKL config downsampling `scale_factor` times (8 or 2)."""
    if scale_factor not in _TINY_VAES:
        raise ValueError(f"scale_factor must be one of {sorted(_TINY_VAES)}, got {scale_factor!r}")
    return copy.deepcopy(_TINY_VAES[scale_factor])


def tiny_text_kwargs(width: int = 32, layers: int = 3) -> dict:
    """CLIPTextConfig sizes of a tiny text encoder of `width` channels."""
    return dict(hidden_size=width, intermediate_size=37, num_attention_heads=4, num_hidden_layers=layers)


def clip_text_config(vocab_size: int = BYTE_VOCAB, max_length: int = 77, **sizes):
    """A CLIPTextConfig for the offline byte-level tokenizer (bos 0, eos = pad 1)."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, vocab_size=vocab_size,
                          max_position_embeddings=max_length, **sizes)


# Whole random base models (U-Net, VAE, text encoder) for the trainer's `build_base`
BASE_SHAPES = {
    # widths (32, 64) U-Net, 2x VAE: a 32x32 image is a 16x16 latent; trains hundreds of steps in seconds
    "tiny": dict(unet={**tiny_unet_config("sd1"), "layers_per_block": 1}, vae=tiny_vae_config(2),
                 text=tiny_text_kwargs(32, layers=2), max_length=16),
    # SD-like proportions at CPU size (factor-8 VAE, three U-Net levels): the CPU benchmark's default
    "small": dict(
        unet=dict(block_out_channels=(32, 64, 128), layers_per_block=2, norm_num_groups=16, cross_attention_dim=64,
                  attention_head_dim=8, sample_size=16, **_DOWN_UP_3),
        vae=dict(block_out_channels=(32, 64, 128, 128), layers_per_block=2, norm_num_groups=16, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                 sample_size=128),
        text=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=4),
        max_length=77,
    ),
    # Stable Diffusion 1.5's shapes with random weights (benchmarks)
    "sd15": dict(
        unet=dict(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
                  attention_head_dim=8, sample_size=64),
        vae=dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                 down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                 sample_size=512, scaling_factor=0.18215),
        text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12),
        max_length=77,
    ),
}


def sd1_three_level_blocks() -> dict:
    """Down and up block types of a three-level SD 1.x-style U-Net (attention in the first two)."""
    return dict(_DOWN_UP_3)


def tiny_unet(family: str = "sd1", exact: bool = False, seed: int = 0):
    """A random tiny UNet2DConditionModel of `family` (eval mode)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(**tiny_unet_config(family, exact)).eval()


def unet_inputs(unet, batch: int = 2, size: int = 16, vae_scale_factor: int = 2, seed: int = 0):
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


def random_control_lora(unet, rank: int = 4, seed: int = 0, std: float = 0.05, base_biases: bool = False) -> dict:
    """A random Control-LoRA file's tensors for `unet` (original key names, marker included): low-rank
    factors for every Linear/Conv weight of the copied encoder, the rest in full. `base_biases` stores
    the U-Net's own biases for the factored layers (what diffusers' loader assumes)."""
    from controlnet.checkpoints.original_keys import ours_to_original
    from controlnet.nn.controlnet import ControlNet

    g = torch.Generator().manual_seed(seed)
    cn = ControlNet.from_unet(unet, load_weights=False, device="meta")
    base = unet.state_dict()
    state = {}
    for name, module in cn.named_modules():
        params = dict(module.named_parameters(recurse=False))
        copied = not name.startswith("controlnet_")
        for pname, p in params.items():
            key = f"{name}.{pname}"
            if copied and pname == "weight" and p.ndim >= 2:
                kernel = [1] * (p.ndim - 2)
                state[f"{name}.up"] = torch.randn(p.shape[0], rank, *kernel, generator=g) * std
                state[f"{name}.down"] = torch.randn(rank, *p.shape[1:], generator=g) * std
            elif copied and pname == "bias" and base_biases and "weight" in params and params["weight"].ndim >= 2:
                state[key] = base[key].detach().clone()
            else:
                state[key] = torch.randn(p.shape, generator=g) * std + (1.0 if pname == "weight" and p.ndim == 1 else 0.0)
    return {**ours_to_original(state, cn.config.layers_per_block), "lora_controlnet": torch.tensor([])}
