"""DiT ControlNet files (SD3/SD3.5, Flux): detected from their keys, configs read off the tensors,
loaded strictly, converted between the original and diffusers layouts.

Layouts (`DIT_LAYOUTS`):
- "sd3-diffusers": InstantX SD3 nets, SAI's `*-diffusers` re-uploads, the 17-channel inpainting net;
- "sd35-original": SAI's `sd3.5_large_controlnet_{canny,depth,blur}.safetensors` (fused qkv,
  `adaLN_modulation`, a scalar `control_type`);
- "flux-diffusers": InstantX / Shakker-Labs (union, Union Pro 2.0), XLabs `-diffusers` (alimama's
  inpainting nets are detected here and refused: their control input is wider than diffusers' model);
- "xlabs-original": XLabs-AI x-flux files (`double_blocks.*`, `input_hint_block.{0..14}`, `pos_embed_input`).
Also recognised and named, but not ControlNets: "flux-control" (BFL FLUX.1 Canny/Depth dev: the
control latent is concatenated on the base's input channels; full or LoRA), SD3 and Flux bases.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from pathlib import Path

import torch
from safetensors import safe_open

from controlnet.checkpoints.config_files import config_override, read_json_config
from controlnet.checkpoints.io import check_finite, read_tensors
from controlnet.checkpoints.stored import init_kwargs
from controlnet.dtypes import parse_dtype
from controlnet.errors import CheckpointError, InputError
from controlnet.nn.dit_controlnet import (
    FLUX_UNION_MODES,
    SD35_CONTROL_TYPES,
    XLABS_HINT_WIDTHS,
    FluxControlNet,
    SD3ControlNet,
)

DIT_LAYOUTS = ("sd3-diffusers", "sd35-original", "flux-diffusers", "xlabs-original")
NOT_CONTROLNETS = {
    "flux-control": "a FLUX.1 Control model (Canny/Depth dev): it takes the control latent concatenated on its "
                    "input channels, so it is a base model, not a ControlNet; load it as the base",
    "flux-control-lora": "a FLUX.1 Control LoRA (Canny/Depth dev -lora): it makes a plain Flux base a FLUX.1 Control "
                         "model (its input layer widened), it is not a ControlNet (generate / serve --control-lora)",
    "flux-lora": "a Flux LoRA, not a ControlNet; apply it to a Flux base",
    "flux-base": "a Flux base transformer, not a ControlNet; pass it as the base model",
    "sd3-base": "an SD3 base transformer, not a ControlNet; pass it as the base model",
}
CLASS_NAMES = {"SD3ControlNetModel": "sd3-diffusers", "FluxControlNetModel": "flux-diffusers"}


# ---------------------------------------------------------------------------------------------- detection

BASE_PREFIX = "model.diffusion_model."  # where full checkpoints (ComfyUI, SAI) keep the diffusion model


def detect_dit_layout(shapes: dict[str, tuple]) -> str | None:
    """The DiT layout of a state dict given as {key: shape} (ComfyUI's detection order), or None."""
    if any(k.startswith(BASE_PREFIX) for k in shapes):
        shapes = {k[len(BASE_PREFIX):]: v for k, v in shapes.items() if k.startswith(BASE_PREFIX)}
    has = shapes.__contains__
    if has("controlnet_blocks.0.weight") and has("double_blocks.0.img_attn.norm.key_norm.scale"):
        return "xlabs-original"
    if has("pos_embed_input.proj.weight"):
        return "sd35-original" if any(k.endswith(".adaLN_modulation.1.bias") for k in shapes) else "sd3-diffusers"
    if has("controlnet_x_embedder.weight"):
        return "flux-diffusers"
    lora_in = [shape for k, shape in shapes.items() if "lora" in k and ("img_in" in k or "x_embedder" in k)
               and ("lora_A" in k or "down" in k)]
    if lora_in:  # FLUX.1 Control LoRAs widen the input layer to twice the output's channels (FLUX.1: 64 -> 128)
        outs = [shape[0] for k, shape in shapes.items()
                if k.removeprefix("transformer.") in ("proj_out.lora_B.weight", "final_layer.linear.lora_B.weight")]
        wide = [2 * n for n in outs] or [128]
        return "flux-control-lora" if any(shape[-1] in wide for shape in lora_in) else "flux-lora"
    for inp, out, blocks in (("img_in.weight", "final_layer.linear.weight", "double_blocks."),
                             ("x_embedder.weight", "proj_out.weight", "single_transformer_blocks.")):
        if has(inp) and has(out) and any(k.startswith(blocks) for k in shapes):
            # input twice as wide as the output: the control latent rides on the input channels
            return "flux-control" if shapes[inp][-1] == 2 * shapes[out][0] else "flux-base"
    if has("joint_blocks.0.x_block.attn.qkv.weight") or \
            (has("pos_embed.proj.weight") and has("proj_out.weight") and has("context_embedder.weight")):
        return "sd3-base"
    return None


def dit_layout_of(path: str | os.PathLike) -> str | None:
    """The DiT layout of a ControlNet file or folder, reading only its header where it can; None
    when it is not a DiT file (the U-Net loaders take it from there and report what it is)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "controlnet" if (path / "controlnet" / "config.json").is_file() else path
        if not (folder / "config.json").is_file():
            return None
        with contextlib.suppress(CheckpointError):
            return CLASS_NAMES.get(read_json_config(folder / "config.json").get("_class_name"))
        return None
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            return detect_dit_layout({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()})
    except Exception:  # noqa: BLE001 - not safetensors (or unreadable): try the safe torch reader
        pass
    return _pickle_layout(path)


def _pickle_layout(path: Path) -> str | None:
    """The DiT layout of a zip-format `.pth`/`.bin`, memory-mapped so that only the header is read
    (a 1.4 GB U-Net ControlNet is not loaded twice); None for anything unreadable or older."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - the U-Net loader reads it again and reports what is wrong
        return None
    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        return None
    return detect_dit_layout({k: tuple(v.shape) for k, v in obj.items() if torch.is_tensor(v)})


# ---------------------------------------------------------------------------------------------- key maps
# (original key template, diffusers key templates): one target is a rename, three a fused qkv split
# along dim 0. `{i}` is a block index, `{p}` weight or bias. Keys matching no rule keep their name.

def _hint_rules() -> list[tuple[str, list[str]]]:
    """x-flux's `input_hint_block` Sequential (convs at 0, 2, ..., 14) onto conv_in / blocks / conv_out."""
    names = ["conv_in", *(f"blocks.{k}" for k in range(6)), "conv_out"]
    return [(f"input_hint_block.{2 * j}.{{p}}", [f"input_hint_block.{n}.{{p}}"]) for j, n in enumerate(names)]


SAI_RULES = [
    ("transformer_blocks.{i}.attn.qkv.{p}", [f"transformer_blocks.{{i}}.attn.to_{x}.{{p}}" for x in "qkv"]),
    ("transformer_blocks.{i}.attn.proj.{p}", ["transformer_blocks.{i}.attn.to_out.0.{p}"]),
    ("transformer_blocks.{i}.mlp.fc1.{p}", ["transformer_blocks.{i}.ff.net.0.proj.{p}"]),
    ("transformer_blocks.{i}.mlp.fc2.{p}", ["transformer_blocks.{i}.ff.net.2.{p}"]),
    ("transformer_blocks.{i}.adaLN_modulation.1.{p}", ["transformer_blocks.{i}.norm1.linear.{p}"]),
]
_D, _T = "double_blocks.{i}.", "transformer_blocks.{i}."
XLABS_RULES = [
    ("img_in.{p}", ["x_embedder.{p}"]),
    ("txt_in.{p}", ["context_embedder.{p}"]),
    ("pos_embed_input.{p}", ["controlnet_x_embedder.{p}"]),
    ("time_in.in_layer.{p}", ["time_text_embed.timestep_embedder.linear_1.{p}"]),
    ("time_in.out_layer.{p}", ["time_text_embed.timestep_embedder.linear_2.{p}"]),
    ("vector_in.in_layer.{p}", ["time_text_embed.text_embedder.linear_1.{p}"]),
    ("vector_in.out_layer.{p}", ["time_text_embed.text_embedder.linear_2.{p}"]),
    ("guidance_in.in_layer.{p}", ["time_text_embed.guidance_embedder.linear_1.{p}"]),
    ("guidance_in.out_layer.{p}", ["time_text_embed.guidance_embedder.linear_2.{p}"]),
    (_D + "img_mod.lin.{p}", [_T + "norm1.linear.{p}"]),
    (_D + "txt_mod.lin.{p}", [_T + "norm1_context.linear.{p}"]),
    (_D + "img_attn.qkv.{p}", [_T + f"attn.to_{x}.{{p}}" for x in "qkv"]),
    (_D + "txt_attn.qkv.{p}", [_T + f"attn.add_{x}_proj.{{p}}" for x in "qkv"]),
    (_D + "img_attn.norm.query_norm.scale", [_T + "attn.norm_q.weight"]),
    (_D + "img_attn.norm.key_norm.scale", [_T + "attn.norm_k.weight"]),
    (_D + "txt_attn.norm.query_norm.scale", [_T + "attn.norm_added_q.weight"]),
    (_D + "txt_attn.norm.key_norm.scale", [_T + "attn.norm_added_k.weight"]),
    (_D + "img_attn.proj.{p}", [_T + "attn.to_out.0.{p}"]),
    (_D + "txt_attn.proj.{p}", [_T + "attn.to_add_out.{p}"]),
    (_D + "img_mlp.0.{p}", [_T + "ff.net.0.proj.{p}"]),
    (_D + "img_mlp.2.{p}", [_T + "ff.net.2.{p}"]),
    (_D + "txt_mlp.0.{p}", [_T + "ff_context.net.0.proj.{p}"]),
    (_D + "txt_mlp.2.{p}", [_T + "ff_context.net.2.{p}"]),
    *_hint_rules(),
]


def _pattern(template: str) -> re.Pattern:
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{p\}", r"(?P<p>weight|bias)") + "$")


def _remap(state: dict, rules: list[tuple[str, list[str]]], to_diffusers: bool) -> dict:
    """Apply `rules` forwards (split fused tensors) or backwards (concatenate them)."""
    out, pending = {}, {}
    compiled = [(_pattern(src), dst) for src, dst in rules] if to_diffusers else \
        [(_pattern(d), (src, k, len(dst))) for src, dst in rules for k, d in enumerate(dst)]
    for key, value in state.items():
        for pattern, target in compiled:
            if m := pattern.match(key):
                fields = m.groupdict()
                if to_diffusers:
                    if len(target) > 1 and (value.ndim == 0 or value.shape[0] % len(target)):
                        raise CheckpointError(f"key {key!r} of shape {tuple(value.shape)} is not a fused q/k/v tensor")
                    parts = value.chunk(len(target), dim=0) if len(target) > 1 else (value,)
                    out.update({t.format(**fields): p.contiguous() for t, p in zip(target, parts)})
                else:
                    src, k, n = target
                    pending.setdefault(src.format(**fields), [None] * n)[k] = value
                break
        else:
            out[key] = value
    for key, parts in pending.items():
        if any(p is None for p in parts):
            raise CheckpointError(f"cannot write {key!r}: some of its q/k/v parts are missing")
        out[key] = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
    return out


# ---------------------------------------------------------------------------------------------- configs

def _count(state: dict, prefix: str) -> int:
    return len({int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))})


def infer_sd3_config(state: dict) -> dict:
    """SD3ControlNetModel's config from diffusers-named tensors. Head width: the q-norm's size when
    the blocks have one, else 64 (every public SD3/SD3.5 model)."""
    inner = state["controlnet_blocks.0.weight"].shape[0]
    cond = state["pos_embed_input.proj.weight"]
    norm_q = state.get("transformer_blocks.0.attn.norm_q.weight")
    head = norm_q.shape[0] if norm_q is not None else 64
    use_pos = "pos_embed.proj.weight" in state
    in_ch = state["pos_embed.proj.weight"].shape[1] if use_pos else cond.shape[1]
    ctx = state.get("context_embedder.weight")
    grid = state.get("pos_embed.pos_embed")
    n = _count(state, "transformer_blocks.")
    return {
        "sample_size": 128, "patch_size": cond.shape[-1], "in_channels": in_ch, "out_channels": in_ch,
        "num_layers": n, "attention_head_dim": head, "num_attention_heads": inner // head,
        "joint_attention_dim": ctx.shape[1] if ctx is not None else None,
        "caption_projection_dim": ctx.shape[0] if ctx is not None else inner,
        "pooled_projection_dim": state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        "pos_embed_max_size": math.isqrt(grid.shape[1]) if grid is not None else None,
        "extra_conditioning_channels": cond.shape[1] - in_ch,
        "dual_attention_layers": tuple(i for i in range(n) if f"transformer_blocks.{i}.attn2.to_q.weight" in state),
        "qk_norm": None if norm_q is None else ("layer_norm" if "transformer_blocks.0.attn.norm_q.bias" in state else "rms_norm"),
        "pos_embed_type": "sincos" if use_pos else None, "use_pos_embed": use_pos,
        # InstantX nets (with a text stream) were trained on zero pooled projections; SAI's on real ones
        "force_zeros_for_pooled_projection": ctx is not None,
    }


def _rope_axes(head: int) -> tuple[int, ...]:
    """Flux's rotary axes: (16, 56, 56) at its 128-wide heads; other widths follow diffusers' tiny
    test proportions (d/4, d/4, d/2). Not in the tensors: files we write store the exact config."""
    return (16, 56, 56) if head == 128 else (head // 4, head // 4, head // 2)


def infer_flux_config(state: dict) -> dict:
    """FluxControlNetModel's config from diffusers-named tensors."""
    x = state["x_embedder.weight"]
    norm = state.get("transformer_blocks.0.attn.norm_q.weight", state.get("single_transformer_blocks.0.attn.norm_q.weight"))
    if norm is None:
        raise CheckpointError("no transformer block in the file: cannot tell the head width")
    head, hint = norm.shape[0], state.get("input_hint_block.conv_out.weight")
    control_in = state["controlnet_x_embedder.weight"].shape[1]
    if hint is None and control_in != x.shape[1]:
        raise CheckpointError(f"its control input takes {control_in} channels and its image input {x.shape[1]}: "
                              "an inpainting variant with extra mask channels (alimama), which diffusers' "
                              "FluxControlNetModel and this package do not run")
    mode = state.get("controlnet_mode_embedder.weight")
    widths = _hint_widths(state) if hint is not None else None
    return {
        "patch_size": math.isqrt(control_in // hint.shape[0]) if hint is not None else 1,
        "in_channels": x.shape[1], "num_layers": _count(state, "transformer_blocks."),
        "num_single_layers": _count(state, "single_transformer_blocks."),
        "attention_head_dim": head, "num_attention_heads": x.shape[0] // head,
        "joint_attention_dim": state["context_embedder.weight"].shape[1],
        "pooled_projection_dim": state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in state,
        "axes_dims_rope": _rope_axes(head),
        "num_mode": mode.shape[0] if mode is not None else None,
        "conditioning_embedding_channels": hint.shape[0] if hint is not None else None,
        **({"hint_widths": widths} if widths else {}),  # only a net wider than XLabs' (diffusers has no such key)
    }


def _hint_widths(state: dict) -> tuple[int, ...] | None:
    """The hint encoder's conv widths (conv_in, then each stride-2 conv); None for XLabs' own 16s."""
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"input_hint_block\.blocks\.(\d+)\.weight$", k))})
    widths = (state["input_hint_block.conv_in.weight"].shape[0], *(state[f"input_hint_block.blocks.{i}.weight"].shape[0]
                                                                  for i in blocks[1::2]))
    return None if widths == XLABS_HINT_WIDTHS else widths


# ---------------------------------------------------------------------------------------------- reading

DIT_CLASSES = (SD3ControlNet, FluxControlNet)
MODEL_CLASSES = {"sd3-diffusers": SD3ControlNet, "sd35-original": SD3ControlNet,
                 "flux-diffusers": FluxControlNet, "xlabs-original": FluxControlNet}


def _not_a_controlnet(path: Path, layout: str | None) -> CheckpointError:
    what = NOT_CONTROLNETS.get(layout, "not a DiT ControlNet")
    return CheckpointError(f"{path}: {what}")


def read_dit_state(path: str | os.PathLike, *, check: bool = True) -> tuple[dict, dict | None, str, dict]:
    """(state in diffusers names, stored config or None, layout, config facts the layout itself
    carries, e.g. the SAI `control_type`)."""
    from controlnet.checkpoints.stored import stored_config

    path = Path(path)
    if path.is_dir():
        return _read_folder(path, check)
    tensors, metadata = read_tensors(path)
    layout = detect_dit_layout({k: tuple(v.shape) for k, v in tensors.items()})
    if layout not in DIT_LAYOUTS:
        raise _not_a_controlnet(path, layout)
    facts = {}
    if layout == "sd35-original" and "control_type" in tensors:
        value = tensors.pop("control_type").float().reshape(-1)
        kind = round(float(value[0])) if value.numel() == 1 and torch.isfinite(value).all() else value.tolist()[:4]
        if not isinstance(kind, int) or kind not in SD35_CONTROL_TYPES:
            raise CheckpointError(f"{path}: control_type {kind} is none of the SD3.5 ControlNets' "
                                  f"({', '.join(f'{k} {v[0]}' for k, v in SD35_CONTROL_TYPES.items())})")
        facts["hint_transform"] = SD35_CONTROL_TYPES[kind][1]
    if check:
        check_finite(tensors, str(path))
    rules = {"sd35-original": SAI_RULES, "xlabs-original": XLABS_RULES}.get(layout)
    if rules is not None:
        try:
            tensors = _remap(tensors, rules, to_diffusers=True)
        except CheckpointError as exc:
            raise CheckpointError(f"{path} ({layout} layout): {exc}") from None
    return tensors, stored_config(metadata, path), layout, facts


def _read_folder(path: Path, check: bool) -> tuple[dict, dict, str, dict]:
    from controlnet.checkpoints.stored import WEIGHTS_NAMES

    if (path / "controlnet" / "config.json").is_file():
        path = path / "controlnet"
    config = read_json_config(path / "config.json")
    layout = CLASS_NAMES.get(config.get("_class_name"))
    weights = next((path / n for n in WEIGHTS_NAMES if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no weights file; expected one of {', '.join(WEIGHTS_NAMES)}")
    tensors, _ = read_tensors(weights)
    found = detect_dit_layout({k: tuple(v.shape) for k, v in tensors.items()})
    if found != layout:
        raise CheckpointError(f"{weights}: config.json says {config.get('_class_name')}, "
                              f"but the weights are {NOT_CONTROLNETS.get(found, f'in the {found} layout')}")
    if check:
        check_finite(tensors, str(weights))
    return tensors, {k: v for k, v in config.items() if not k.startswith("_")}, layout + "-folder", {}


def infer_dit_config(state: dict, layout: str, source: str) -> dict:
    """The config of a DiT ControlNet from its (diffusers-named) tensors alone."""
    infer = infer_sd3_config if MODEL_CLASSES[layout.removesuffix("-folder")] is SD3ControlNet else infer_flux_config
    try:
        return infer(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{source} ({layout} layout): {exc}") from None
    except KeyError as exc:
        raise CheckpointError(f"{source} ({layout} layout): missing tensor {exc.args[0]!r}; "
                              "the file is incomplete or not the ControlNet it looks like") from None
    except (IndexError, ZeroDivisionError, ValueError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{source} ({layout} layout): its tensor shapes describe no ControlNet ({exc})") from None


def build_dit(path, state: dict, stored: dict | None, layout: str, facts: dict, override: dict | None = None):
    """The (meta-device) net a file describes: stored config, else the one read off the tensors, then
    the layout's own facts and the caller's overrides; a config that builds nothing is one line."""
    cls = MODEL_CLASSES[layout.removesuffix("-folder")]
    full = {**(stored if stored is not None else infer_dit_config(state, layout, str(path))), **facts, **(override or {})}
    try:
        with torch.device("meta"):
            return cls(**init_kwargs(full, cls))
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError, RuntimeError, AttributeError) as exc:
        raise CheckpointError(f"{path} ({layout} layout): its config does not build a {cls.__name__}: {exc}") from None


def load_dit_controlnet(path, *, config=None, dtype=None, device="cpu"):
    """An `SD3ControlNet` or `FluxControlNet` from any of `DIT_LAYOUTS` (file or diffusers folder)."""
    from controlnet.checkpoints.stored import check_keys
    from controlnet.devices import check_device

    path, target, device = Path(path), parse_dtype(dtype) or torch.float32, check_device(device)
    override = config_override(config)
    state, stored, layout, facts = read_dit_state(path)
    cn = build_dit(path, state, stored, layout, facts, override)
    check_keys(cn, state, path, layout)
    cn.load_state_dict(state, strict=True, assign=True)
    torch.nn.Module.to(cn, device=device, dtype=target)
    dtypes = [v.dtype for v in state.values() if v.is_floating_point()]
    cn.loaded_from = {"path": str(path), "layout": layout, "dtype": max(set(dtypes), key=dtypes.count) if dtypes else torch.float32}
    return cn.eval()


# ---------------------------------------------------------------------------------------------- writing

def original_layout_of(cn) -> str | None:
    """The original layout a net has one in: the SAI SD3.5 nets and the XLabs nets; None for the rest."""
    if isinstance(cn, SD3ControlNet) and cn.context_embedder is None:
        return "sd35-original"
    if isinstance(cn, FluxControlNet) and cn.input_hint_block is not None and not cn.config.num_single_layers \
            and cn.config.num_mode is None:
        return "xlabs-original"
    return None


def to_original(cn, state: dict) -> dict:
    """`state` (diffusers names) in the net's original layout; an InputError when it has none."""
    layout = original_layout_of(cn)
    if layout is None:
        raise InputError(f"a {cn.family} has no original layout (it is published in the diffusers layout); "
                         "convert it --to diffusers")
    if layout == "xlabs-original":
        return _remap(state, XLABS_RULES, to_diffusers=False)
    out = _remap(state, SAI_RULES, to_diffusers=False)
    kinds = {transform: k for k, (_, transform) in SD35_CONTROL_TYPES.items()}
    out["control_type"] = torch.tensor(float(kinds.get(cn.config.hint_transform, 0)))
    return out


def save_dit_controlnet(cn, path, *, layout: str = "diffusers", dtype=None) -> Path:
    """Write a DiT ControlNet as a diffusers folder, a diffusers single file (config in the header),
    or in its original layout (SAI SD3.5 / XLabs). Written atomically."""
    from controlnet.checkpoints.save import cpu_state, output_kind, public_config, write_checkpoint

    path, target = Path(path), parse_dtype(dtype)
    kind = output_kind(path, layout)
    state = cpu_state(cn, target)
    if layout == "original":
        state = to_original(cn, state)
    name = {SD3ControlNet: "SD3ControlNetModel", FluxControlNet: "FluxControlNetModel"}[type(cn)]
    config = {k: v for k, v in public_config(cn).items() if not (k == "hint_widths" and v is None)}  # XLabs' own
    return write_checkpoint(path, kind, state, config, name)


# ---------------------------------------------------------------------------------------------- inspect

FAMILY_NAMES = {"flux-control": "FLUX.1 Control (Canny/Depth dev; control latent concatenated on the input)",
                "flux-control-lora": "FLUX.1 Control LoRA (widens a Flux base's input layer)",
                "flux-lora": "Flux LoRA (not a ControlNet)",
                "flux-base": "Flux base transformer (not a ControlNet)", "sd3-base": "SD3 base transformer (not a ControlNet)"}


def describe_dit(path: str | os.PathLike) -> dict:
    """What `controlnet inspect` shows for a DiT file: family, layout, blocks, index rule, inputs."""
    path = Path(path)
    layout = dit_layout_of(path)
    if layout not in DIT_LAYOUTS and not path.is_dir():
        state, _ = read_tensors(path)
        return {"path": str(path), "layout": layout, "family": FAMILY_NAMES[layout],
                "parameters": sum(v.numel() for v in state.values()), "tensors": len(state),
                "note": NOT_CONTROLNETS[layout]}
    state, stored, layout, facts = read_dit_state(path, check=False)
    config = dict(build_dit(path, state, stored, layout, facts).config)  # validated, defaults filled in
    sd3 = MODEL_CLASSES[layout.removesuffix("-folder")] is SD3ControlNet
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    info = {
        "path": str(path), "layout": layout, "family": _family(config, sd3),
        "parameters": sum(v.numel() for v in state.values()), "tensors": len(state),
        "dtype": ", ".join(sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})),
        "width": config["num_attention_heads"] * config["attention_head_dim"],
        "blocks": config["num_layers"] if sd3 else f"{config['num_layers']} double + {config['num_single_layers']} single",
        "index_rule": "sd3" if sd3 else ("xlabs" if config.get("conditioning_embedding_channels") else "flux"),
        "control_input": _control_input(config, sd3),
        "config_source": "stored in file" if stored is not None else "inferred from shapes",
        "non_finite_tensors": f"{len(nonfinite)} (first: {nonfinite[0]}): the file is corrupt" if nonfinite else "none",
    }
    if sd3:
        info["hint_transform"] = config.get("hint_transform", "identity")
        info["pooled_projections"] = "zeros" if config.get("force_zeros_for_pooled_projection", True) else "real"
    elif config.get("num_mode"):
        info["control_modes"] = f"{config['num_mode']} ({', '.join(f'{k} {v}' for k, v in FLUX_UNION_MODES.items())})"
    return info


def _family(config: dict, sd3: bool) -> str:
    if sd3:
        if config.get("joint_attention_dim") is None:
            return "SD3.5 ControlNet (Stability AI; single blocks, no text stream)"
        return "SD3 ControlNet inpainting" if config.get("extra_conditioning_channels") else "SD3 ControlNet (InstantX)"
    if config.get("conditioning_embedding_channels"):
        return "Flux ControlNet (XLabs; pixel hint encoder)"
    if config.get("num_mode"):
        return "Flux ControlNet union (InstantX / Shakker-Labs)"
    return "Flux ControlNet (InstantX / Shakker-Labs)"


def _control_input(config: dict, sd3: bool) -> str:
    if sd3:
        extra = config.get("extra_conditioning_channels", 0)
        return f"VAE latent ({config['in_channels']} ch{f' + {extra} mask' if extra else ''})"
    if config.get("conditioning_embedding_channels"):
        widths = ", ".join(map(str, config.get("hint_widths") or XLABS_HINT_WIDTHS))
        return (f"pixels in [-1, 1] (3 ch), through the hint encoder (convs {widths}, "
                f"then {config['conditioning_embedding_channels']} ch per latent cell)")
    return f"packed VAE latent ({config['in_channels']} ch)"
