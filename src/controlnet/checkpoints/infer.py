"""The architecture of a ControlNet read off its tensor shapes (diffusers key names), no YAML needed.

Shapes show widths, levels, attention placement, blocks per level, transformer depth, text width,
linear vs conv projections and hint channels. They do not show head counts, the group-norm size or
SDXL's time-id width, so those follow the family conventions (32 groups; 256) unless a config
overrides them. The head convention follows the projections, which the tensors do show: 1×1
convolutional `proj_in` is the SD 1.x code (`num_heads: 8`), linear `proj_in` the SD 2.x / XL code
(`num_head_channels: 64`), whatever the text width. Files written by this package
carry their exact config in the safetensors metadata, so they never need the conventions.
"""

from __future__ import annotations

import re

from controlnet.checkpoints.union import infer_union
from controlnet.errors import CheckpointError


def _indices(keys, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def infer_config(state: dict, source: str = "checkpoint", filename: str = "") -> dict:
    keys = list(state)
    try:
        conv_in = state["conv_in.weight"]
        hint_in = state["controlnet_cond_embedding.conv_in.weight"]
    except KeyError as exc:
        raise CheckpointError(f"{source}: missing tensor {exc.args[0]!r}; cannot infer the architecture") from None
    blocks = _indices(keys, r"down_blocks\.(\d+)\.")
    if not blocks:
        raise CheckpointError(f"{source}: no down_blocks.* tensors; cannot infer the architecture")
    widths, types, depths = [], [], []
    for b in blocks:
        widths.append(state[f"down_blocks.{b}.resnets.0.conv1.weight"].shape[0])
        attn = _indices(keys, rf"down_blocks\.{b}\.attentions\.0\.transformer_blocks\.(\d+)\.")
        types.append("CrossAttnDownBlock2D" if attn else "DownBlock2D")
        depths.append(len(attn) or 1)
    layers = len(_indices(keys, r"down_blocks\.0\.resnets\.(\d+)\."))
    mid_depth = len(_indices(keys, r"mid_block\.attentions\.0\.transformer_blocks\.(\d+)\."))
    if mid_depth and types[-1] == "DownBlock2D":
        depths[-1] = mid_depth  # diffusers builds the middle block with the last level's depth
    to_k = [v for k, v in state.items() if k.endswith("attn2.to_k.weight")]
    proj_in = [v for k, v in state.items() if k.endswith(".proj_in.weight")]
    hint_blocks = _indices(keys, r"controlnet_cond_embedding\.blocks\.(\d+)\.")
    hint_widths = [hint_in.shape[0]] + [state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in hint_blocks[1::2]]
    cross = to_k[0].shape[1] if to_k else 768
    linear = bool(proj_in) and proj_in[0].ndim == 2

    config = {
        "in_channels": conv_in.shape[1],
        "conditioning_channels": hint_in.shape[1],
        "block_out_channels": tuple(widths),
        "down_block_types": tuple(types),
        "layers_per_block": layers,
        "mid_block_type": "UNetMidBlock2DCrossAttn" if mid_depth else "UNetMidBlock2D",
        "transformer_layers_per_block": depths[0] if len(set(depths)) == 1 else tuple(depths),
        "cross_attention_dim": cross,
        "use_linear_projection": linear,
        "conditioning_embedding_out_channels": tuple(hint_widths),
        "hint_encoder": "paper" if hint_in.shape[-1] == 4 else "code",
        "attention_head_dim": tuple(max(1, w // 64) for w in widths) if linear else 8,
    }
    if "add_embedding.linear_1.weight" in state:
        config["addition_embed_type"] = "text_time"
        config["addition_time_embed_dim"] = 256
        config["projection_class_embeddings_input_dim"] = state["add_embedding.linear_1.weight"].shape[1]
    if "task_embedding" in state:  # union (xinsir / ProMax): its own fields, exact
        config.update(infer_union(state, source))
    name = filename.lower()
    if "shuffle" in name:  # not visible in shapes; A1111 and ComfyUI decide by file name too
        config["global_pool_conditions"] = True
    if re.search(r"control_sd15_normal", name):  # ControlNet 1.0 normal expects BGR normal maps
        config["controlnet_conditioning_channel_order"] = "bgr"
    return config
