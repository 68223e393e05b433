"""The original ZoeDepth file (ZoeD_M12_N.pt) as transformers' ZoeDepthForDepthEstimation.

The file holds `{"model": state dict}` of ZoeDepth-N: MiDaS 3.1's DPT on timm's BEiT-L/16 384 under
`core.core.` (`pretrained.model.` the BEiT, `pretrained.act_postprocess*` the reassemble layers, `scratch.`
the fusion blocks and the relative-depth head), then the metric head (bin regressor, projectors,
attractors, log-binomial). transformers' ZoeDepth is the same network (its conversion script for
Intel/zoedepth-nyu renames these keys); here the config is read off the tensors and the keys are renamed,
so nothing comes from a hub (the heads: the relative position tables' width). What the tensors do not
say follows the published model: the neck reading blocks 6, 12, 18, 24 of 24 (every quarter), one NYU bin
configuration (64 bins, 0.001..10 m, softplus centres), and timm's LayerNorm eps 1e-6 (transformers'
conversion keeps BEiT's default 1e-12). The file's constant buffers (relative position indices, the
log-binomial's bin indices) are skipped: transformers computes them. The names are transformers 5's
(BEiT's `backbone.beit.layers.N.attention.q_proj`); under transformers 4 the strict load refuses the file,
naming the keys it misses (pyproject requires transformers ≥ 5.25).
"""

from __future__ import annotations

import re

from controlnet.errors import InputError

CORE = "core.core."
BEIT = CORE + "pretrained.model."
PATCH = 16
MAX_DEPTH = 10.0  # ZoeD_N: NYU Depth v2, indoor, metres
CONSTANT_BUFFERS = ("relative_position_index", "log_binomial_transform.k_idx", "log_binomial_transform.K_minus_1")
UNUSED = (BEIT + "head.", BEIT + "fc_norm.")  # timm's classifier, not used for depth
PATTERNS = (  # (regex on the original name, replacement), first match wins
    (r"^" + re.escape(BEIT) + r"blocks\.(\d+)\.", r"backbone.beit.layers.\1."),
    (r"^" + re.escape(BEIT) + r"patch_embed\.proj\.", "backbone.beit.embeddings.patch_embeddings.projection."),
    (r"^" + re.escape(BEIT) + r"cls_token$", "backbone.beit.embeddings.cls_token"),
    (r"^" + re.escape(CORE) + r"pretrained\.act_postprocess([1-4])\.0\.project\.0\.", lambda m: f"neck.reassemble_stage.readout_projects.{int(m[1]) - 1}.0."),
    (r"^" + re.escape(CORE) + r"pretrained\.act_postprocess([1-4])\.3\.", lambda m: f"neck.reassemble_stage.layers.{int(m[1]) - 1}.projection."),
    (r"^" + re.escape(CORE) + r"pretrained\.act_postprocess([1-4])\.4\.", lambda m: f"neck.reassemble_stage.layers.{int(m[1]) - 1}.resize."),
    (r"^" + re.escape(CORE) + r"scratch\.layer([1-4])_rn\.", lambda m: f"neck.convs.{int(m[1]) - 1}."),
    (r"^" + re.escape(CORE) + r"scratch\.refinenet([1-4])\.out_conv\.", lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.projection."),
    (r"^" + re.escape(CORE) + r"scratch\.refinenet([1-4])\.resConfUnit(\d)\.conv(\d)\.",
     lambda m: f"neck.fusion_stage.layers.{4 - int(m[1])}.residual_layer{m[2]}.convolution{m[3]}."),
    (r"^" + re.escape(CORE) + r"scratch\.output_conv\.(\d)\.", lambda m: f"relative_head.conv{int(m[1]) // 2 + 1}."),
    (r"^(seed_bin_regressor|seed_projector|projectors\.\d+|attractors\.\d+)\._net\.(\d)\.",
     lambda m: f"metric_head.{m[1]}.conv{int(m[2]) // 2 + 1}."),
    (r"^conditional_log_binomial\.mlp\.(\d)\.", lambda m: f"metric_head.conditional_log_binomial.mlp.{m[1]}."),
    (r"^conv2\.", "metric_head.conv2."),
)
BLOCK_PARTS = (("norm1.", "layernorm_before."), ("norm2.", "layernorm_after."), ("gamma_1", "lambda_1"),
               ("gamma_2", "lambda_2"), ("attn.proj.", "attention.o_proj."),
               ("attn.relative_position_bias_table", "relative_position_bias.relative_position_bias_table"))
QKV = re.compile(r"^" + re.escape(BEIT) + r"blocks\.(\d+)\.attn\.(qkv\.weight|q_bias|v_bias)$")


def _count(state: dict, pattern: str) -> int:
    return len({m.group(1) for k in state if (m := re.match(pattern, k))})


def zoe_config(state: dict):
    """transformers' ZoeDepthConfig for the ZoeDepth-N whose tensors are `state` (original names)."""
    from transformers import BeitConfig, ZoeDepthConfig

    hidden = state[BEIT + "cls_token"].shape[-1]
    layers = _count(state, re.escape(BEIT) + r"blocks\.(\d+)\.")
    table, heads = state[BEIT + "blocks.0.attn.relative_position_bias_table"].shape
    window = (round((table - 3) ** 0.5) + 1) // 2
    if layers % 4 or hidden % heads:
        raise KeyError(f"{layers} BEiT blocks of width {hidden}")
    backbone = BeitConfig(
        image_size=window * PATCH, patch_size=PATCH, num_hidden_layers=layers, hidden_size=hidden,
        intermediate_size=state[BEIT + "blocks.0.mlp.fc1.weight"].shape[0], num_attention_heads=heads,
        use_relative_position_bias=True, reshape_hidden_states=False, layer_norm_eps=1e-6,
        out_features=[f"stage{layers * k // 4}" for k in (1, 2, 3, 4)],
    )
    bins = state["seed_bin_regressor._net.2.weight"].shape[0]
    return ZoeDepthConfig(
        backbone_config=backbone, neck_hidden_sizes=[state[f"{CORE}pretrained.act_postprocess{i}.3.weight"].shape[0] for i in (1, 2, 3, 4)],
        fusion_hidden_size=state[CORE + "scratch.layer1_rn.weight"].shape[0],
        num_relative_features=state[CORE + "scratch.output_conv.2.weight"].shape[0],
        bottleneck_features=state["conv2.weight"].shape[0], bin_embedding_dim=state["seed_projector._net.2.weight"].shape[0],
        num_attractors=[state[f"attractors.{i}._net.2.weight"].shape[0] for i in range(_count(state, r"attractors\.(\d+)\."))],
        bin_centers_type="softplus", bin_configurations=[{"n_bins": bins, "min_depth": 1e-3, "max_depth": MAX_DEPTH}],
    )


def _rename(name: str) -> str:
    for pattern, replacement in PATTERNS:
        if re.match(pattern, name):
            name = re.sub(pattern, replacement, name)
            break
    if name.startswith("backbone.beit.layers."):
        for old, new in BLOCK_PARTS:
            name = name.replace(old, new)
    return name


def rename_state(state: dict) -> dict:
    """Original names -> transformers names; qkv split into query and key/value weights, q/v biases placed.
    Names not recognised keep their spelling, so a strict load reports them as unexpected."""
    out = {}
    for name, tensor in state.items():
        if name.startswith(UNUSED) or name.endswith(CONSTANT_BUFFERS):
            continue
        if m := QKV.match(name):
            prefix = f"backbone.beit.layers.{m.group(1)}.attention."
            if m.group(2) == "qkv.weight":
                for part, chunk in zip("qkv", tensor.chunk(3, dim=0)):
                    out[f"{prefix}{part}_proj.weight"] = chunk.contiguous()
            else:  # BEiT has no key bias
                out[f"{prefix}{m.group(2)[0]}_proj.bias"] = tensor
        else:
            out[_rename(name)] = tensor
    return out


def build_zoe(state: dict, what: str, path: str):
    """(ZoeDepthForDepthEstimation of the inferred config, its renamed state dict); an InputError when `state`
    is not a ZoeDepth at all (the strict load afterwards catches partial matches)."""
    import torch
    from transformers import ZoeDepthForDepthEstimation

    try:
        config = zoe_config(state)
    except (KeyError, IndexError) as exc:
        raise InputError(f"{path} is not a {what} weight file: no ZoeDepth tensors ({exc})") from exc
    with torch.device("meta"):
        model = ZoeDepthForDepthEstimation(config)
    # its bin-index buffers are not in the state (not persistent): make them again, for real
    head = model.metric_head.conditional_log_binomial
    head.log_binomial_transform = type(head.log_binomial_transform)(config.bin_configurations[0]["n_bins"], act=torch.softmax)
    return model, rename_state(state)
