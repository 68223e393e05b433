"""The original Depth Anything V2 files (`depth_anything_v2_vits.pth`, vitb, vitl) as transformers'
`DepthAnythingForDepthEstimation`: the configuration read from the tensors' shapes, the names mapped.

The original checkpoints are plain state dicts of the DepthAnythingV2 class of the authors (and of
comfyui_controlnet_aux): `pretrained.*` (a DINOv2 ViT with fused qkv and layer scale) and
`depth_head.*` (a DPT head: `projects`, `resize_layers`, `scratch.layer*_rn`, `scratch.refinenet1..4`,
`scratch.output_conv1/2`). transformers' class holds the same tensors under other names, with qkv
split in three, so the files load into it without running any of the authors' code.
"""

from __future__ import annotations

import re

from controlnet.errors import InputError

# the DINOv2 blocks whose outputs feed the DPT head, by encoder depth (the authors' intermediate_layer_idx)
FEATURE_BLOCKS = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23)}
HEAD_DIM = 64  # every published DINOv2 encoder has 64-wide heads (vits 6, vitb 12, vitl 16)

_RENAMES = (  # (original pattern, transformers name); \1, \2 keep the indices
    (r"pretrained\.cls_token", "backbone.embeddings.cls_token"),
    (r"pretrained\.mask_token", "backbone.embeddings.mask_token"),
    (r"pretrained\.pos_embed", "backbone.embeddings.position_embeddings"),
    (r"pretrained\.patch_embed\.proj\.(weight|bias)", r"backbone.embeddings.patch_embeddings.projection.\1"),
    (r"pretrained\.norm\.(weight|bias)", r"backbone.layernorm.\1"),
    (r"pretrained\.blocks\.(\d+)\.(norm1|norm2)\.(weight|bias)", r"backbone.encoder.layer.\1.\2.\3"),
    (r"pretrained\.blocks\.(\d+)\.attn\.proj\.(weight|bias)", r"backbone.encoder.layer.\1.attention.o_proj.\2"),
    (r"pretrained\.blocks\.(\d+)\.ls1\.gamma", r"backbone.encoder.layer.\1.layer_scale1.lambda1"),
    (r"pretrained\.blocks\.(\d+)\.ls2\.gamma", r"backbone.encoder.layer.\1.layer_scale2.lambda1"),
    (r"pretrained\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)", r"backbone.encoder.layer.\1.mlp.\2.\3"),
    (r"depth_head\.projects\.(\d)\.(weight|bias)", r"neck.reassemble_stage.layers.\1.projection.\2"),
    (r"depth_head\.resize_layers\.(\d)\.(weight|bias)", r"neck.reassemble_stage.layers.\1.resize.\2"),
    (r"depth_head\.scratch\.output_conv1\.(weight|bias)", r"head.conv1.\1"),
    (r"depth_head\.scratch\.output_conv2\.0\.(weight|bias)", r"head.conv2.\1"),
    (r"depth_head\.scratch\.output_conv2\.2\.(weight|bias)", r"head.conv3.\1"),
)
_FUSION_PARTS = {"out_conv": "projection", "resConfUnit1.conv1": "residual_layer1.convolution1",
                 "resConfUnit1.conv2": "residual_layer1.convolution2", "resConfUnit2.conv1": "residual_layer2.convolution1",
                 "resConfUnit2.conv2": "residual_layer2.convolution2"}


def transformers_name(key: str) -> str | None:
    """The transformers name of one original tensor (None: not a tensor of the relative model)."""
    for pattern, name in _RENAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, name, key)
    if match := re.fullmatch(r"depth_head\.scratch\.layer(\d)_rn\.weight", key):
        return f"neck.convs.{int(match[1]) - 1}.weight"
    if match := re.fullmatch(r"depth_head\.scratch\.refinenet(\d)\.(.+)\.(weight|bias)", key):
        if match[2] in _FUSION_PARTS:  # refinenet4 fuses the deepest features first: transformers' layer 0
            return f"neck.fusion_stage.layers.{4 - int(match[1])}.{_FUSION_PARTS[match[2]]}.{match[3]}"
    return None


def to_transformers(state: dict) -> dict:
    """The original tensors under transformers' names; qkv split into q, k, v. Unknown names are kept
    as they are, so the strict load names them."""
    out = {}
    for key, value in state.items():
        if match := re.fullmatch(r"pretrained\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key):
            for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                out[f"backbone.encoder.layer.{match[1]}.attention.{part}_proj.{match[2]}"] = chunk
        else:
            out[transformers_name(key) or key] = value
    return out


def config_from_tensors(state: dict, path):
    """A DepthAnythingConfig matching the original tensors' shapes (vits, vitb, vitl, or any encoder of
    depth 12 or 24 with 64-wide heads)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    def shape(key):
        if key not in state:
            raise InputError(f"{path} is not a Depth Anything V2 weight file (no tensor {key}); give "
                             f"depth_anything_v2_vits.pth (or vitb/vitl) as published, or a transformers folder")
        return tuple(state[key].shape)

    dim = shape("pretrained.cls_token")[-1]
    depth = len({k.split(".")[2] for k in state if k.startswith("pretrained.blocks.")})
    if depth not in FEATURE_BLOCKS or dim % HEAD_DIM:
        raise InputError(f"{path}: a DINOv2 encoder of {depth} blocks, width {dim}, is not one of the published "
                         f"Depth Anything V2 encoders (vits, vitb, vitl)")
    patch = shape("pretrained.patch_embed.proj.weight")[-1]
    positions = shape("pretrained.pos_embed")[1] - 1
    backbone = Dinov2Config(
        image_size=round(positions**0.5) * patch, patch_size=patch, hidden_size=dim, num_hidden_layers=depth,
        num_attention_heads=dim // HEAD_DIM, mlp_ratio=shape("pretrained.blocks.0.mlp.fc1.weight")[0] // dim,
        out_indices=[i + 1 for i in FEATURE_BLOCKS[depth]], apply_layernorm=True, reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone, patch_size=patch, reassemble_hidden_size=dim,
        neck_hidden_sizes=[shape(f"depth_head.projects.{i}.weight")[0] for i in range(4)],
        fusion_hidden_size=shape("depth_head.scratch.layer1_rn.weight")[0],
        head_hidden_size=shape("depth_head.scratch.output_conv2.0.weight")[0],
        depth_estimation_type="relative",
    )
