"""The original MiDaS DPT-Hybrid file (dpt_hybrid-midas-501f0c75.pt) as transformers' DPTForDepthEstimation.

The file is the state dict of MiDaS's `DPTDepthModel(backbone="vitb_rn50_384")`: timm's hybrid ViT under
`pretrained.model.` (a BiT ResNet with weight-standardised convolutions and TF "same" padding, then ViT
blocks), the reassemble layers as `pretrained.act_postprocess{3,4}`, the fusion blocks and the head under
`scratch.`. transformers' hybrid DPT is the same network (its conversion script for Intel/dpt-hybrid-midas
renames these keys); here the config is read off the tensors and the keys are renamed, so nothing comes
from a hub. Two things the tensors do not say follow the published model: 64 channels per attention
head (768 / 12), and the neck reading the last ViT block and the one three before it (8 and 11 of 12).
"""

from __future__ import annotations

import re

from controlnet.errors import InputError

VIT = "pretrained.model."
BIT = VIT + "patch_embed.backbone."
HEAD_WIDTH = 64
PATCH = 16  # the BiT stem and stages downsample by 16; the 1x1 projection makes each pixel a token
# whole-name renames; the classifier head of timm's ViT is in the file but unused by depth
FIXED = {
    VIT + "cls_token": "dpt.embeddings.cls_token",
    VIT + "pos_embed": "dpt.embeddings.position_embeddings",
    VIT + "patch_embed.proj.weight": "dpt.embeddings.projection.weight",
    VIT + "patch_embed.proj.bias": "dpt.embeddings.projection.bias",
    VIT + "norm.weight": "dpt.layernorm.weight",
    VIT + "norm.bias": "dpt.layernorm.bias",
}
UNUSED = (VIT + "head.weight", VIT + "head.bias")
# prefix renames (regex on the original name -> replacement)
PATTERNS = (
    (r"^" + re.escape(BIT) + r"stem\.conv\.", "dpt.embeddings.backbone.bit.embedder.convolution."),
    (r"^" + re.escape(BIT) + r"stem\.norm\.", "dpt.embeddings.backbone.bit.embedder.norm."),
    (r"^" + re.escape(BIT) + r"stages\.(\d+)\.blocks\.(\d+)\.", r"dpt.embeddings.backbone.bit.encoder.stages.\1.layers.\2."),
    (r"^" + re.escape(VIT) + r"blocks\.(\d+)\.norm1\.", r"dpt.encoder.layer.\1.layernorm_before."),
    (r"^" + re.escape(VIT) + r"blocks\.(\d+)\.norm2\.", r"dpt.encoder.layer.\1.layernorm_after."),
    (r"^" + re.escape(VIT) + r"blocks\.(\d+)\.attn\.proj\.", r"dpt.encoder.layer.\1.attention.output.dense."),
    (r"^" + re.escape(VIT) + r"blocks\.(\d+)\.mlp\.fc1\.", r"dpt.encoder.layer.\1.intermediate.dense."),
    (r"^" + re.escape(VIT) + r"blocks\.(\d+)\.mlp\.fc2\.", r"dpt.encoder.layer.\1.output.dense."),
    (r"^pretrained\.act_postprocess3\.0\.project\.0\.", "neck.reassemble_stage.readout_projects.2.0."),
    (r"^pretrained\.act_postprocess4\.0\.project\.0\.", "neck.reassemble_stage.readout_projects.3.0."),
    (r"^pretrained\.act_postprocess3\.3\.", "neck.reassemble_stage.layers.2.projection."),
    (r"^pretrained\.act_postprocess4\.3\.", "neck.reassemble_stage.layers.3.projection."),
    (r"^pretrained\.act_postprocess4\.4\.", "neck.reassemble_stage.layers.3.resize."),
    (r"^scratch\.output_conv\.(\d)\.", r"head.head.\1."),
)
QKV = re.compile(r"^" + re.escape(VIT) + r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)$")
SCRATCH = re.compile(r"^scratch\.(layer([1-4])_rn|refinenet([1-4])\.(out_conv|resConfUnit([12])\.conv([12])))\.(weight|bias)$")


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def hybrid_config(state: dict):
    """transformers' DPTConfig for the DPT-Hybrid whose tensors are `state` (original MiDaS names)."""
    from transformers import DPTConfig

    hidden = state[VIT + "cls_token"].shape[-1]
    layers = _count(state, re.escape(VIT) + r"blocks\.(\d+)\.")
    stages = _count(state, re.escape(BIT) + r"stages\.(\d+)\.")
    depths = [_count(state, re.escape(BIT) + rf"stages\.{s}\.blocks\.(\d+)\.") for s in range(stages)]
    widths = [state[f"{BIT}stages.{s}.blocks.0.conv3.weight"].shape[0] for s in range(stages)]
    grid = round((state[VIT + "pos_embed"].shape[1] - 1) ** 0.5)
    if stages != 3 or layers < 4 or hidden % HEAD_WIDTH:
        raise KeyError(f"{stages} ResNet stages, {layers} ViT blocks of width {hidden}")
    backbone = {"model_type": "bit", "global_padding": "same", "layer_type": "bottleneck", "depths": depths,
                "hidden_sizes": widths, "embedding_size": state[BIT + "stem.conv.weight"].shape[0],
                "out_features": ["stage1", "stage2", "stage3"], "embedding_dynamic_padding": True}
    return DPTConfig(
        is_hybrid=True, backbone_config=backbone, hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // HEAD_WIDTH, intermediate_size=state[VIT + "blocks.0.mlp.fc1.weight"].shape[0],
        layer_norm_eps=1e-6, image_size=grid * PATCH, patch_size=PATCH, readout_type="project",
        backbone_out_indices=[0, 1, layers - 4, layers - 1], reassemble_factors=[1, 1, 1, 0.5],
        neck_hidden_sizes=[widths[0], widths[1], state["pretrained.act_postprocess3.3.weight"].shape[0],
                           state["pretrained.act_postprocess4.3.weight"].shape[0]],
        backbone_featmap_shape=[1, widths[-1], grid, grid], fusion_hidden_size=state["scratch.layer1_rn.weight"].shape[0],
    )


def _scratch_name(match: re.Match) -> str:
    """scratch.layerN_rn -> neck.convs.N-1; scratch.refinenetN (4 first) -> neck.fusion_stage.layers.4-N."""
    _, rn, refine, part, unit, conv, kind = match.groups()
    if rn:
        return f"neck.convs.{int(rn) - 1}.{kind}"
    layer = f"neck.fusion_stage.layers.{4 - int(refine)}"
    return f"{layer}.projection.{kind}" if part == "out_conv" else f"{layer}.residual_layer{unit}.convolution{conv}.{kind}"


def rename_state(state: dict) -> dict:
    """Original MiDaS names -> transformers names; qkv split into query, key, value. Names not recognised
    keep their original spelling, so a strict load reports them as unexpected."""
    out = {}
    for name, tensor in state.items():
        if name in UNUSED:
            continue
        if name in FIXED:
            out[FIXED[name]] = tensor
        elif m := QKV.match(name):
            prefix = f"dpt.encoder.layer.{m.group(1)}.attention.attention."
            for part, chunk in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[f"{prefix}{part}.{m.group(2)}"] = chunk.contiguous()
        elif m := SCRATCH.match(name):
            out[_scratch_name(m)] = tensor
        else:
            new = next((re.sub(p, r, name) for p, r in PATTERNS if re.match(p, name)), name)
            out[new] = tensor
    return out


def build_dpt_hybrid(state: dict, what: str, path: str):
    """(DPTForDepthEstimation of the inferred config, its renamed state dict); an InputError when `state`
    is not a DPT-Hybrid at all (the strict load afterwards catches partial matches)."""
    import torch
    from transformers import DPTForDepthEstimation

    try:
        config = hybrid_config(state)
    except (KeyError, IndexError) as exc:
        raise InputError(f"{path} is not a {what} weight file: no DPT-Hybrid tensors ({exc})") from exc
    with torch.device("meta"):
        model = DPTForDepthEstimation(config)
    return model, rename_state(state)


def hybrid_depth(model, pixel_values):
    """DPTForDepthEstimation's hybrid forward, giving the neck the token grid: transformers' own forward
    assumes a square one for hybrids, MiDaS runs on any multiple of 32."""
    config = model.config
    outputs = model.dpt(pixel_values, output_hidden_states=True)
    layers = outputs.hidden_states[1:]  # [0] is the embedding output
    hidden = [*outputs.intermediate_activations, *(layers[i] for i in config.backbone_out_indices[2:])]
    height, width = pixel_values.shape[-2:]
    return model.head(model.neck(hidden, height // PATCH, width // PATCH))
