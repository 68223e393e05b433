"""Tiny random SD3 and Flux base folders (diffusers' save_pretrained, built offline): what the generate,
train and serve tests of transformer bases load. Flux: a VAE scaling by 8, then 2×2 packing; SD3: a VAE
scaling by 1. Either may leave T5 out (a one-CLIP base, as the miniature ones)."""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)

from tiny_models import randomized

FLUX = dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
SD3 = dict(sample_size=32, patch_size=1, in_channels=8, num_layers=4, attention_head_dim=8, num_attention_heads=4,
           joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=64, out_channels=8, qk_norm="rms_norm")
WORDS = ["<pad>", "</s>", "<unk>", "a", "red", "cube", "on", "grass", "blurry"]


def t5_text(words=WORDS):
    """(T5 tokenizer, T5 encoder) for a tiny base, built offline."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    t5_tok = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    t5_tok.pre_tokenizer = Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=t5_tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    t5 = T5EncoderModel(T5Config(vocab_size=len(words), d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0)).eval()
    return fast, t5


def _clip(with_projection: bool):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from controlnet.tiny import BYTE_VOCAB, clip_text_config, tiny_text_kwargs

    if with_projection:
        return CLIPTextModelWithProjection(clip_text_config(BYTE_VOCAB, projection_dim=32,
                                                            **tiny_text_kwargs(32, layers=2))).eval()
    return CLIPTextModel(clip_text_config(BYTE_VOCAB, **tiny_text_kwargs(32, layers=2))).eval()


def save_flux_base(folder: Path, *, t5: bool = True, seed: int = 1, **transformer) -> Path:
    """A tiny Flux base; `t5=False` leaves text_encoder_2 out (the CLIP's token states are the text)."""
    from controlnet.offline_tokenizer import offline_clip_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(4, 4, 4, 4), layers_per_block=1, latent_channels=4, norm_num_groups=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035).eval()
    t5_tok, t5_model = t5_text() if t5 else (None, None)
    FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                 transformer=randomized(FluxTransformer2DModel(**dict(FLUX, **transformer)), seed),
                 text_encoder=_clip(False), tokenizer=offline_clip_tokenizer(folder.parent / f"{folder.name}-tok"),
                 text_encoder_2=t5_model, tokenizer_2=t5_tok).save_pretrained(folder)
    return folder


def save_sd3_base(folder: Path, *, t5: bool = True, clips: int = 2, seed: int = 2, **transformer) -> Path:
    """A tiny SD3 base (two CLIPs; `clips=1`: the first alone, give pooled_projection_dim=32); `t5=False`
    leaves text_encoder_3 out (zeros in its place, as diffusers)."""
    from controlnet.offline_tokenizer import offline_clip_tokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(4,), layers_per_block=1, latent_channels=8, norm_num_groups=1,
                        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035).eval()
    t5_tok, t5_model = t5_text() if t5 else (None, None)
    StableDiffusion3Pipeline(
        transformer=randomized(SD3Transformer2DModel(**dict(SD3, **transformer)), seed),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae, text_encoder=_clip(True),
        text_encoder_2=_clip(True) if clips == 2 else None, text_encoder_3=t5_model,
        tokenizer=offline_clip_tokenizer(folder.parent / f"{folder.name}-tok1"),
        tokenizer_2=offline_clip_tokenizer(folder.parent / f"{folder.name}-tok2") if clips == 2 else None,
        tokenizer_3=t5_tok,
    ).save_pretrained(folder)
    return folder


def assert_control_generate_equals_base_and_replays(argv: list, base, hint, size: int, capsys) -> None:
    """`controlnet generate ARGV` (prompt "a red cube", 2 steps, seed 3, a FLUX.1 Control hint) draws what `base`
    draws with the same hint and seed, and `--from` its PNG draws it again."""
    import numpy as np
    import PIL.Image

    from bad_input_tools import run_cli

    def picture(path) -> np.ndarray:
        return np.asarray(PIL.Image.open(path).convert("RGB"))

    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    path = out.strip().splitlines()[-1]
    want = base("a red cube", control_image=PIL.Image.open(hint), width=size, height=size, steps=2,
                generator=torch.Generator().manual_seed(3), output_type="pil")[0]
    assert np.array_equal(picture(path), np.asarray(want))
    code, out, err = run_cli(["generate", "--from", path, "-o", Path(path).parent, "--no-grid"], capsys)
    assert code == 0, err
    assert np.array_equal(picture(out.strip().splitlines()[-1]), picture(path))
