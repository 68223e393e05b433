"""FLUX.1 Control LoRAs (BFL's FLUX.1-Canny-dev-lora / FLUX.1-Depth-dev-lora, and LoRAs trained by
diffusers' `examples/flux-control`): a plain Flux base made a FLUX.1 Control model.

The file holds low-rank factors for the transformer's linears, the input layer's among them with
twice the base's input channels (the packed control latent is concatenated on them), and in full
the attention's RMS-norm scales. Applied as diffusers' `FluxControlPipeline.load_lora_weights`
applies it: the input layer widened with zeros (`_maybe_expand_transformer_param_shape_or_error_`),
`W + (alpha / r) · B @ A` on every factored linear (B's bias added to the layer's, peft's
`lora_bias`), the norm scales replaced (`_control_lora_supported_norm_keys`). The deltas are merged
once here (diffusers keeps peft layers that recompute `B @ A` in every forward), with
`control_lora.merged`, the package's one LoRA merge.

Two layouts: diffusers' (`transformer.<module>.lora_A.weight`; `alpha` from the
`lora_adapter_metadata` peft config it saves, else 1) and BFL's original names (`double_blocks`,
fused qkv / linear1, `*.scale` norms), converted here as diffusers'
`_convert_bfl_flux_control_lora_to_diffusers` converts them, except the final layer's lora_A:
diffusers swaps its rows as it swaps the (shift, scale) halves of lora_B, which permutes the rank
components of A alone (a different product; rank 1 fails); here A is kept, so the merged delta is
exactly BFL's with its output halves swapped (tests/test_flux_control_lora.py shows both).
"""

from __future__ import annotations

import json
import os
import re

import torch

from controlnet.checkpoints.control_lora import merged
from controlnet.checkpoints.dit import XLABS_RULES, _count, _remap
from controlnet.checkpoints.dit_base import FLUX_SINGLE_RULES, _split_bfl
from controlnet.checkpoints.io import check_finite, read_tensors
from controlnet.errors import CheckpointError

NORMS = ("attn.norm_q.weight", "attn.norm_k.weight", "attn.norm_added_q.weight", "attn.norm_added_k.weight")
FACTOR = re.compile(r"(.+)\.(lora_A|lora_B)\.(weight|bias)")
BFL_PREFIXES = ("double_blocks.", "single_blocks.", "img_in.", "final_layer.")


def read_flux_control_lora(path: str | os.PathLike) -> tuple[dict, dict]:
    """(tensors in diffusers' names without the `transformer.` prefix, peft config from the file's
    metadata or {}); never unpickles (`read_tensors`)."""
    tensors, metadata = read_tensors(path)
    check_finite(tensors, str(path))
    others = sorted({k.split(".")[0] for k in tensors if k.startswith(("text_encoder", "unet."))})
    if others:
        raise CheckpointError(f"{path}: a LoRA with {', '.join(others)} parts: a FLUX.1 Control LoRA has transformer "
                              "parts only; give FLUX.1-Canny-dev-lora / FLUX.1-Depth-dev-lora or one trained for them")
    tensors = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    if any(k.startswith(BFL_PREFIXES) for k in tensors):
        try:
            tensors = bfl_to_diffusers(tensors)
        except (CheckpointError, KeyError) as exc:
            raise CheckpointError(f"{path} (BFL layout): {_plain_lora(exc)}") from None
    try:
        config = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    except ValueError:
        raise CheckpointError(f"{path}: its lora_adapter_metadata is not JSON; the file was edited or damaged") from None
    config = {k.removeprefix("transformer."): v for k, v in config.items() if not k.startswith("text_encoder")}
    return tensors, config


def _plain_lora(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no {exc.args[0]!r}: not a FLUX.1 Control LoRA (it widens img_in), or a truncated one"
    return str(exc)


def bfl_to_diffusers(state: dict) -> dict:
    """BFL's Control LoRA names -> diffusers' (as `_convert_bfl_flux_control_lora_to_diffusers`, at any
    width and block count): lora_B splits as the base weight it multiplies; lora_A, the input side,
    is shared by the parts of a fused layer."""
    width = state["img_in.lora_B.weight"].shape[0]
    factors, rest = {"lora_A": {}, "lora_B": {}}, {}
    for key, value in state.items():
        if m := FACTOR.fullmatch(key):
            factors[m.group(2)][f"{m.group(1)}.{m.group(3)}"] = value
        else:
            rest[key] = value
    rules = XLABS_RULES + FLUX_SINGLE_RULES
    out = _tagged(_remap(_split_bfl(factors["lora_B"], width), rules, to_diffusers=True), "lora_B")
    out.update(_tagged(_remap(_shared_inputs(factors["lora_A"]), rules, to_diffusers=True), "lora_A"))
    out.update(_remap(rest, rules, to_diffusers=True))
    return out


def _shared_inputs(down: dict) -> dict:
    """lora_A of fused layers repeated once per part (qkv: three, so that `_remap`'s split gives copies;
    a single block's linear1: q, k, v and the MLP's input) and of the final modulation kept as is."""
    out = {}
    for key, value in down.items():
        if m := re.fullmatch(r"single_blocks\.(\d+)\.linear1\.(weight|bias)", key):
            block, p = f"single_transformer_blocks.{m.group(1)}.", m.group(2)
            out.update({f"{block}{n}.{p}": value for n in ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")})
        elif m := re.fullmatch(r"final_layer\.adaLN_modulation\.1\.(weight|bias)", key):
            out[f"norm_out.linear.{m.group(1)}"] = value
        elif key.endswith((".qkv.weight", ".qkv.bias")):
            out[key] = torch.cat([value] * 3)
        else:
            out[key] = value
    return out


def _tagged(state: dict, factor: str) -> dict:
    """`<module>.weight` -> `<module>.<factor>.weight`."""
    return {f"{k.rpartition('.')[0]}.{factor}.{k.rpartition('.')[2]}": v for k, v in state.items()}


def describe(state: dict) -> str:
    """"width W, D double / S single blocks" of a transformer's or a LoRA's tensors (diffusers names)."""
    width = state.get("x_embedder.lora_B.weight", state.get("x_embedder.weight"))
    width = "?" if width is None else width.shape[0]
    return (f"width {width}, {_count(state, 'transformer_blocks.')} double / "
            f"{_count(state, 'single_transformer_blocks.')} single blocks")


def apply_flux_control_lora(transformer, path: str | os.PathLike):
    """`transformer` (a plain Flux base's, diffusers' FluxTransformer2DModel) made the FLUX.1 Control model
    the LoRA file describes, in place; returned. Every mismatch is one line naming the file."""
    lora, config = read_flux_control_lora(path)
    base_in = transformer.x_embedder.in_features
    if transformer.config.out_channels and base_in == 2 * transformer.config.out_channels:
        raise CheckpointError(f"the base model is already a FLUX.1 Control model (its input takes the control latent); "
                              f"{path} is for a plain Flux base (FLUX.1-dev): give that as the base")
    down = lora.get("x_embedder.lora_A.weight")
    if down is None or down.shape[1] == base_in:
        have = "no LoRA on its input layer" if down is None else f"its input layer keeps the base's {base_in} channels"
        raise CheckpointError(f"{path} is a plain Flux LoRA ({have}), not a FLUX.1 Control LoRA, which widens the input "
                              "layer to take the control latent; give FLUX.1-Canny-dev-lora / Depth-dev-lora or one "
                              "trained like them")
    _check_fits(transformer, lora, path)
    _widen_input(transformer, down.shape[1])
    with torch.no_grad():
        _merge(transformer, lora, config)
    transformer.register_to_config(in_channels=down.shape[1], out_channels=base_in)
    return transformer


def _check_fits(transformer, lora: dict, path) -> None:
    """Every tensor names a layer of this base with its shape (the input layer: twice as wide)."""
    params = dict(transformer.named_parameters())
    for key, value in lora.items():
        m = FACTOR.fullmatch(key)
        if m and m.group(2) == "lora_A" and m.group(3) == "bias":
            raise CheckpointError(f"{path}: {key}: a bias on lora_A, which peft (and diffusers) do not apply")
        if not m and not key.endswith(NORMS):
            raise CheckpointError(f"{path}: {key} is neither a LoRA factor nor an attention norm scale: not a FLUX.1 "
                                  "Control LoRA (a ControlNet or a whole model?)")
        target = params.get(f"{m.group(1)}.{m.group(3)}" if m else key)
        partner = m and f"{m.group(1)}.{'lora_A' if m.group(2) == 'lora_B' else 'lora_B'}.weight"
        if partner and partner not in lora:
            raise CheckpointError(f"{path}: {key} without its {partner.split('.')[-2]}: the file is truncated or damaged")
        want = None if target is None else _factor_shape(target.shape, m, lora)
        if target is None or tuple(value.shape) != want:
            raise CheckpointError(
                f"{path} is a FLUX.1 Control LoRA for a Flux base of {describe(lora)}, but the base model has "
                f"{describe(params)} ({key}{'' if target is None else f' {tuple(value.shape)} vs {want}'}); use it "
                "with the base it was made for")


def _factor_shape(shape, m, lora: dict):
    """The shape a LoRA tensor must have for a base parameter of `shape` (a norm scale: the same)."""
    if m is None:
        return tuple(shape)
    module, factor, p = m.groups()
    rank = lora[f"{module}.lora_A.weight"].shape[0]
    wide = 2 if module == "x_embedder" else 1
    if factor == "lora_A":
        return (rank, shape[1] * wide)
    return (shape[0], rank) if p == "weight" else (shape[0],)


def _widen_input(transformer, channels: int) -> None:
    """x_embedder with `channels` inputs, the new ones weighted 0 (the LoRA then gives them weight)."""
    old = transformer.x_embedder
    wide = torch.nn.Linear(channels, old.out_features, bias=old.bias is not None, dtype=old.weight.dtype,
                           device=old.weight.device)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, : old.in_features] = old.weight
        if old.bias is not None:
            wide.bias.copy_(old.bias)
    transformer.x_embedder = wide


def _merge(transformer, lora: dict, config: dict) -> None:
    """Deltas merged into the layers, norm scales put in place."""
    params = dict(transformer.named_parameters())
    for key, down in lora.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        up, scale = lora[f"{module}.lora_B.weight"], _scale(module, down.shape[0], config)
        weight = params[f"{module}.weight"]
        weight.copy_(merged(weight, up, down, scale))
        if f"{module}.lora_B.bias" in lora:
            bias = params[f"{module}.bias"]
            bias.copy_((bias.float() + scale * lora[f"{module}.lora_B.bias"].to(bias.device, torch.float32)).to(bias.dtype))
    for key, value in lora.items():
        if key.endswith(NORMS):
            params[key].copy_(value)


def _scale(module: str, rank: int, config: dict) -> float:
    """peft's scaling, alpha / r (alpha / √r with rsLoRA), from the saved config's patterns; 1 without one."""
    if config.get("use_dora"):
        raise CheckpointError("a DoRA LoRA (use_dora): its magnitude vectors are not applied; give a plain LoRA")

    def pick(patterns: dict, default):
        found = next((v for k, v in (patterns or {}).items() if re.match(rf"(.*\.)?({k})$", module)), None)
        return default if found is None else found

    alpha = pick(config.get("alpha_pattern"), config.get("lora_alpha"))
    rank = pick(config.get("rank_pattern"), rank)
    if alpha is None:
        return 1.0
    return alpha / (rank ** 0.5 if config.get("use_rslora") else rank)
