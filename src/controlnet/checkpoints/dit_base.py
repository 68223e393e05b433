"""A transformer base (Flux, FLUX.1 Control, SD3 / SD3.5) from one weights file, its config read off
the tensors (issue 21 §2: "single files where the tensors determine the config"). The text encoders,
VAE and scheduler come from a local diffusers folder of the same family (`TransformerBase`).

Layouts: the diffusers one (a `transformer/diffusion_pytorch_model.safetensors` taken alone) and the
original ones: BFL's (`flux1-dev.safetensors`, `flux1-canny-dev.safetensors`: `double_blocks`,
`single_blocks`, fused qkv) and Stability AI's (`sd3.5_large.safetensors`: `joint_blocks`), either
bare or under ComfyUI's `model.diffusion_model.` prefix (a full checkpoint's text encoders and VAE
are then ignored: the folder's are used).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from controlnet.checkpoints.dit import BASE_PREFIX, XLABS_RULES, _count, _remap, _rope_axes
from controlnet.checkpoints.io import check_finite, read_tensors
from controlnet.dtypes import parse_dtype
from controlnet.errors import CheckpointError

BASE_KINDS = {"flux-diffusers": "flux", "flux-original": "flux", "sd3-diffusers": "sd3", "sd3-original": "sd3"}
_S = "single_blocks.{i}."
FLUX_SINGLE_RULES = [  # BFL single blocks and final layer -> diffusers (linear1 and the final adaLN: `_split_bfl`)
    (_S + "linear2.{p}", ["single_transformer_blocks.{i}.proj_out.{p}"]),
    (_S + "modulation.lin.{p}", ["single_transformer_blocks.{i}.norm.linear.{p}"]),
    (_S + "norm.query_norm.scale", ["single_transformer_blocks.{i}.attn.norm_q.weight"]),
    (_S + "norm.key_norm.scale", ["single_transformer_blocks.{i}.attn.norm_k.weight"]),
    ("final_layer.linear.{p}", ["proj_out.{p}"]),
]


def without_prefix(state: dict) -> dict:
    """The diffusion model's tensors of a checkpoint saved under `model.diffusion_model.` (the rest,
    text encoders and VAE, dropped); the state itself when nothing carries the prefix."""
    inner = {k[len(BASE_PREFIX):]: v for k, v in state.items() if k.startswith(BASE_PREFIX)}
    return inner or state


def base_layout(keys) -> str | None:
    """"flux-diffusers", "flux-original", "sd3-diffusers", "sd3-original", or None."""
    keys = set(keys)
    if "img_in.weight" in keys and "final_layer.linear.weight" in keys:
        return "flux-original"
    if "joint_blocks.0.x_block.attn.qkv.weight" in keys:
        return "sd3-original"
    if "x_embedder.weight" in keys and "proj_out.weight" in keys and any(k.startswith("transformer_blocks.") for k in keys):
        return "flux-diffusers"
    if "pos_embed.proj.weight" in keys and "proj_out.weight" in keys and "context_embedder.weight" in keys:
        return "sd3-diffusers"
    return None


def _split_bfl(state: dict, inner: int | None = None) -> dict:
    """BFL's two tensors that are not renames: a single block's fused linear1 (q, k, v, MLP in) and
    the final layer's modulation, stored (shift, scale) where diffusers reads (scale, shift).
    `inner`: the model's width (default: the input layer's outputs)."""
    inner = inner or state["img_in.weight"].shape[0]
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"single_blocks\.(\d+)\.linear1\.(weight|bias)", key):
            if value.shape[0] <= 3 * inner:
                raise CheckpointError(f"{key} of shape {tuple(value.shape)} is not a fused q/k/v/MLP tensor")
            block, p = f"single_transformer_blocks.{m.group(1)}.", m.group(2)
            parts = value.split([inner, inner, inner, value.shape[0] - 3 * inner])
            names = ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]
            out.update({f"{block}{n}.{p}": t.contiguous() for n, t in zip(names, parts)})
        elif m := re.fullmatch(r"final_layer\.adaLN_modulation\.1\.(weight|bias)", key):
            shift, scale = value.chunk(2, dim=0)
            out[f"norm_out.linear.{m.group(1)}"] = torch.cat([scale, shift])
        else:
            out[key] = value
    return out


def to_diffusers(state: dict, layout: str) -> dict:
    """A base's tensors in diffusers' names (a copy; the layout's own conversion)."""
    if layout == "flux-original":
        return _remap(_split_bfl(state), XLABS_RULES + FLUX_SINGLE_RULES, to_diffusers=True)
    if layout == "sd3-original":
        from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

        return convert_sd3_transformer_checkpoint_to_diffusers(dict(state))
    return state


def infer_flux_base_config(state: dict) -> dict:
    """FluxTransformer2DModel's config from diffusers-named tensors; a FLUX.1 Control model has an
    input twice as wide as its output."""
    x, out = state["x_embedder.weight"], state["proj_out.weight"]
    head = state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    return {
        "patch_size": 1, "in_channels": x.shape[1], "out_channels": out.shape[0] if out.shape[0] != x.shape[1] else None,
        "num_layers": _count(state, "transformer_blocks."), "num_single_layers": _count(state, "single_transformer_blocks."),
        "attention_head_dim": head, "num_attention_heads": x.shape[0] // head,
        "joint_attention_dim": state["context_embedder.weight"].shape[1],
        "pooled_projection_dim": state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in state, "axes_dims_rope": _rope_axes(head),
    }


def infer_sd3_base_config(state: dict) -> dict:
    """SD3Transformer2DModel's config from diffusers-named tensors. Head width: the q-norm's size when
    the blocks have one, else 64 (every public SD3/SD3.5 model)."""
    proj, ctx = state["pos_embed.proj.weight"], state["context_embedder.weight"]
    norm_q = state.get("transformer_blocks.0.attn.norm_q.weight")
    head, inner, n = norm_q.shape[0] if norm_q is not None else 64, proj.shape[0], _count(state, "transformer_blocks.")
    return {
        "sample_size": 128, "patch_size": proj.shape[-1], "in_channels": proj.shape[1],
        "out_channels": state["proj_out.weight"].shape[0] // proj.shape[-1] ** 2, "num_layers": n,
        "attention_head_dim": head, "num_attention_heads": inner // head, "joint_attention_dim": ctx.shape[1],
        "caption_projection_dim": ctx.shape[0],
        "pooled_projection_dim": state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        "pos_embed_max_size": round(state["pos_embed.pos_embed"].shape[1] ** 0.5),
        "dual_attention_layers": tuple(i for i in range(n) if f"transformer_blocks.{i}.attn2.to_q.weight" in state),
        "qk_norm": None if norm_q is None else "rms_norm",
    }


def load_base_transformer(path: str | os.PathLike, kind: str, *, dtype=None, device="cpu"):
    """The diffusers transformer of a Flux / SD3 base file (`kind` "flux" or "sd3": the folder's family),
    built from the config its tensors describe and loaded strictly; every problem one line naming the file."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel

    from controlnet.checkpoints.stored import init_kwargs, load_strictly

    path = Path(path)
    state = without_prefix(read_tensors(path)[0])
    layout = base_layout(state)
    if BASE_KINDS.get(layout) != kind:
        what = f"a {BASE_KINDS[layout]} base transformer" if layout else "no Flux or SD3 base transformer"
        raise CheckpointError(f"{path} is {what}, but the --config folder is a {kind} base: give the folder of its family")
    check_finite(state, str(path))
    cls, infer = (FluxTransformer2DModel, infer_flux_base_config) if kind == "flux" else \
        (SD3Transformer2DModel, infer_sd3_base_config)
    try:
        state = to_diffusers(state, layout)
        with torch.device("meta"):
            model = cls(**init_kwargs(infer(state), cls))
    except KeyError as exc:
        raise CheckpointError(f"{path} ({layout} layout): missing tensor {exc.args[0]!r}; the file is incomplete") from None
    except (CheckpointError, ValueError, TypeError, IndexError, ZeroDivisionError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{path} ({layout} layout): its tensors describe no {cls.__name__} ({exc})") from None
    load_strictly(model, state, str(path), f"{cls.__name__} ({layout} layout)", assign=True)
    return model.to(device=device, dtype=parse_dtype(dtype) or torch.float32).eval()
