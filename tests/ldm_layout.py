"""Write a tiny diffusers Stable Diffusion (XL) pipeline as one single-file checkpoint in the
original LDM key layout (CompVis / StabilityAI): `model.diffusion_model.*`, `first_stage_model.*`
and the text encoder(s) under `cond_stage_model.*` or `conditioner.embedders.*`.

Tests of single-file loading need such files, and no real checkpoint can be downloaded, so this is
the inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint` and `convert_open_clip_checkpoint`
(`diffusers.loaders.single_file_utils`). Written independently of the project's own key maps.
"""

from __future__ import annotations

import torch
from safetensors.torch import save_file

UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL text-time embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
               "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
VAE_RESNET = {"conv_shortcut": "nin_shortcut"}  # norm1, conv1, norm2, conv2 keep their names


def _swap(rest: str, names: dict) -> str:
    """Rename the leading module name(s) of `rest` ("conv1.weight" -> "in_layers.2.weight")."""
    for old, new in names.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def _layer(kind: str, rest: str) -> str:
    """Inside an LDM U-Net block: `.0` the resnet, `.1` the transformer."""
    return f"0.{_swap(rest, UNET_RESNET)}" if kind == "resnets" else f"1.{rest}"


def unet_to_ldm(sd: dict, config) -> dict:
    per = config["layers_per_block"] + 1  # LDM blocks per level: the resnets (+ a down/upsampler)
    has_attn = {k.split(".")[1] for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    out = {}
    for key, value in sd.items():
        head, _, tail = key.rpartition(".")  # tail: weight / bias
        p = key.split(".")
        if head in UNET_FIXED:
            new = f"{UNET_FIXED[head]}.{tail}"
        elif p[0] == "down_blocks":
            b, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            if kind == "downsamplers":  # the level's last LDM block: ".0.op" (Downsample's conv)
                new = f"input_blocks.{(b + 1) * per}.0.op.{tail}"
            else:
                new = f"input_blocks.{1 + b * per + j}.{_layer(kind, rest)}"
        elif p[0] == "mid_block":  # resnet, attention, resnet
            rest = ".".join(p[3:])
            new = f"middle_block.{2 * int(p[2])}.{_swap(rest, UNET_RESNET)}" if p[1] == "resnets" else f"middle_block.1.{rest}"
        elif p[0] == "up_blocks":
            b, kind, j, rest = int(p[1]), p[2], int(p[3]), ".".join(p[4:])
            if kind == "upsamplers":  # after the last resnet (and its attention, if the level has them)
                new = f"output_blocks.{b * per + per - 1}.{2 if p[1] in has_attn else 1}.conv.{tail}"
            else:
                new = f"output_blocks.{b * per + j}.{_layer(kind, rest)}"
        else:
            raise KeyError(f"no LDM name for U-Net key {key}")
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd: dict, config) -> dict:
    levels = len(config["up_block_types"])
    out = {}
    for key, value in sd.items():
        p = key.split(".")
        if p[0] in ("quant_conv", "post_quant_conv") or p[1] in ("conv_in", "conv_out"):
            new = key
        elif p[1] == "conv_norm_out":
            new = f"{p[0]}.norm_out.{p[2]}"
        elif p[1] == "mid_block" and p[2] == "resnets":
            new = f"{p[0]}.mid.block_{int(p[3]) + 1}.{_swap('.'.join(p[4:]), VAE_RESNET)}"
        elif p[1] == "mid_block":  # attention: LDM uses 1x1 convs
            new = f"{p[0]}.mid.attn_1.{_swap('.'.join(p[4:]), VAE_ATTN)}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        elif p[1] in ("down_blocks", "up_blocks"):
            # the decoder's levels are numbered from the bottom in LDM: up.{levels-1} runs first
            b = int(p[2]) if p[1] == "down_blocks" else levels - 1 - int(p[2])
            level = f"{p[0]}.{p[1][:-7]}.{b}"  # encoder.down.b / decoder.up.b
            rest = ".".join(p[5:])
            if p[3] == "resnets":
                new = f"{level}.block.{p[4]}.{_swap(rest, VAE_RESNET)}"
            else:  # downsamplers.0.conv / upsamplers.0.conv
                new = f"{level}.{p[3].removesuffix('rs')}.{rest}"
        else:
            raise KeyError(f"no LDM name for VAE key {key}")
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    """OpenAI CLIP (HF transformers layout under `<prefix>text_model.`), as in SD 1.x and SDXL's first encoder."""
    return {prefix + "text_model." + k.removeprefix("text_model."): v for k, v in sd.items()}


OPEN_CLIP = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}


def open_clip_to_ldm(sd: dict, prefix: str) -> dict:
    """OpenCLIP text tower (SD 2.x, SDXL's second encoder): fused q/k/v `in_proj`, transposed projection."""
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in sd:
        out["text_projection"] = sd.pop("text_projection.weight").T.contiguous()
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for t in ("weight", "bias"):
            qkv = [sd.pop(f"{src}self_attn.{n}_proj.{t}") for n in "qkv"]
            out[f"{dst}attn.in_proj_{t}"] = torch.cat(qkv)
        for k in [k for k in sd if k.startswith(src)]:
            out[dst + _swap(k[len(src):], OPEN_CLIP)] = sd.pop(k)
    if sd:
        raise KeyError(f"no OpenCLIP name for {sorted(sd)}")
    return {prefix + k: v for k, v in out.items()}


def ldm_state_dict(pipe, open_clip: bool = False) -> dict:
    """The LDM-layout state dict of `pipe`; `open_clip` writes an SD 2.x text encoder (SDXL's second
    encoder is always OpenCLIP)."""
    sd = unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config)
    sd.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    te = pipe.text_encoder.state_dict()
    if getattr(pipe, "text_encoder_2", None) is not None:
        sd.update(clip_to_ldm(te, "conditioner.embedders.0.transformer."))
        sd.update(open_clip_to_ldm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    elif open_clip:
        sd.update(open_clip_to_ldm(te, "cond_stage_model.model."))
        width = pipe.text_encoder.config.hidden_size  # OpenCLIP's projection, which SD 2.x does not use
        sd["cond_stage_model.model.text_projection"] = torch.randn(width, width, generator=torch.Generator().manual_seed(0))
    else:
        sd.update(clip_to_ldm(te, "cond_stage_model.transformer."))
        sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]
    # the noise schedule, saved by the original training code beside the weights
    sd["betas"], sd["alphas_cumprod"] = pipe.scheduler.betas, pipe.scheduler.alphas_cumprod
    return sd


def write_ldm_checkpoint(pipe, path, open_clip: bool = False) -> None:
    save_file({k: v.detach().contiguous() for k, v in ldm_state_dict(pipe, open_clip).items()}, str(path))
