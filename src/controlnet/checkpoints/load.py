"""`load_controlnet` / `save_controlnet`: every public ControlNet layout in, both layouts out.

Loading converts to our native (diffusers) key names, takes the architecture from (in order) an
explicit config, the config stored in the file by this package, or the tensor shapes, then loads
strictly: every tensor must be used and every parameter filled, or the error says which.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
import yaml

from controlnet.checkpoints.infer import infer_config
from controlnet.checkpoints.io import PICKLE_SUFFIXES, read_tensors, write_safetensors
from controlnet.checkpoints.layouts import PREFIX, control_part, describe_unknown, detect_layout
from controlnet.checkpoints.original_keys import original_to_ours, ours_to_original
from controlnet.errors import CheckpointError
from controlnet.files import atomic_file
from controlnet.nn.controlnet import OWN_DEFAULTS, ControlNet

CONFIG_METADATA_KEY = "controlnet_config"
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def read_controlnet_state(path: str | os.PathLike) -> tuple[dict, dict | None, str]:
    """(state dict in our key names, stored config or None, the layout it came in)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    tensors, metadata = read_tensors(path)
    layout = detect_layout(tensors)
    stored = json.loads(metadata[CONFIG_METADATA_KEY]) if CONFIG_METADATA_KEY in metadata else None
    if layout == "diffusers":
        return tensors, stored, layout
    if layout in ("original", "original-bare", "controlldm"):
        bare = control_part(tensors, layout, str(path))
        try:
            return original_to_ours(bare), stored, layout
        except KeyError as exc:
            raise CheckpointError(
                f"{path}: looks like the {layout} layout, but key {exc.args[0]!r} fits no ControlNet module"
            ) from None
    if layout == "sd":
        raise CheckpointError(
            f"{path}: this is a Stable Diffusion checkpoint without a ControlNet in it; "
            "pass it as the base model, and a ControlNet file as the control"
        )
    raise CheckpointError(describe_unknown(tensors, str(path)))


def _read_folder(path: Path) -> tuple[dict, dict, str]:
    if (path / "controlnet" / "config.json").is_file():
        path = path / "controlnet"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: a folder without config.json is not a diffusers ControlNet folder")
    weights = next((path / n for n in WEIGHTS_NAMES if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no weights file; expected one of {', '.join(WEIGHTS_NAMES)}")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON ({exc})") from None
    tensors, _ = read_tensors(weights)
    layout = detect_layout(tensors)
    if layout != "diffusers":
        raise CheckpointError(f"{weights}: expected diffusers ControlNet keys, found the {layout!r} layout")
    return tensors, config, "diffusers-folder"


def config_from_original_yaml(data: dict) -> dict:
    """Our config from an original `cldm_*.yaml` (its `control_stage_config`)."""
    params = data.get("model", {}).get("params", data)
    cn = params.get("control_stage_config", {}).get("params", params)
    mult = cn.get("channel_mult", (1, 2, 4, 4))
    width = cn.get("model_channels", 320)
    attn_res = set(cn.get("attention_resolutions", (4, 2, 1)))
    widths = tuple(width * m for m in mult)
    types = tuple("CrossAttnDownBlock2D" if 2**i in attn_res else "DownBlock2D" for i in range(len(mult)))
    if "num_head_channels" in cn and cn["num_head_channels"] not in (None, -1):
        heads = tuple(w // cn["num_head_channels"] for w in widths)
    else:
        heads = cn.get("num_heads", 8)
    depth = cn.get("transformer_depth", 1)
    config = {
        "in_channels": cn.get("in_channels", 4),
        "conditioning_channels": cn.get("hint_channels", 3),
        "block_out_channels": widths,
        "down_block_types": types,
        "layers_per_block": cn.get("num_res_blocks", 2),
        "cross_attention_dim": cn.get("context_dim", 768),
        "attention_head_dim": heads,
        "use_linear_projection": bool(cn.get("use_linear_in_transformer", False)),
        "transformer_layers_per_block": tuple(depth) if isinstance(depth, list) else depth,
        "global_pool_conditions": bool(params.get("global_average_pooling", cn.get("global_average_pooling", False))),
    }
    if cn.get("adm_in_channels"):
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=cn["adm_in_channels"])
    return config


def _config_override(config) -> dict:
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CheckpointError(f"config {path}: no such file")
    if path.suffix in (".yaml", ".yml"):
        return config_from_original_yaml(yaml.safe_load(path.read_text()))
    return json.loads(path.read_text())


def _init_kwargs(config: dict) -> dict:
    allowed = set(inspect.signature(ControlNet.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in allowed}


def load_controlnet(
    path: str | os.PathLike,
    *,
    config: dict | str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
) -> ControlNet:
    """A `ControlNet` from any layout: an original 1.0/1.1 `.pth`/`.safetensors` (prefixed, bare or
    full ControlLDM), a diffusers folder or single file. `config` (dict, `config.json`, or an original
    `cldm_*.yaml`) overrides what is stored or inferred."""
    path = Path(path)
    state, stored, layout = read_controlnet_state(path)
    full = stored if stored is not None else infer_config(state, str(path), path.name)
    full = {**full, **_config_override(config)}
    try:
        with torch.device("meta"):
            cn = ControlNet(**_init_kwargs(full))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} ({layout} layout): its config does not build a ControlNet: {exc}") from None
    _check_keys(cn, state, path, layout)
    cn.load_state_dict(state, strict=True, assign=True)
    target = DTYPES[dtype] if isinstance(dtype, str) else dtype
    cn = cn.to(device=device, dtype=target) if target is not None else cn.to(device)
    cn.loaded_from = {"path": str(path), "layout": layout}
    return cn.eval()


def _check_keys(cn: ControlNet, state: dict, path: Path, layout: str) -> None:
    expected = {k: tuple(v.shape) for k, v in cn.state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [f"{k} {tuple(state[k].shape)} vs {expected[k]}" for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
        if items:
            parts.append(f"{len(items)} {what} (first: {', '.join(items[:4])})")
    raise CheckpointError(
        f"{path}: looks like the {layout} layout but does not match the ControlNet its shapes describe: "
        + "; ".join(parts)
        + ". If the architecture was guessed wrong, pass the model's config (config.json or cldm_*.yaml)."
    )


def save_controlnet(
    cn: ControlNet,
    path: str | os.PathLike,
    *,
    layout: str = "diffusers",
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write `cn` as a diffusers folder (path without suffix), a diffusers single file, or an
    original-layout file (`control_model.` keys, `.safetensors` or `.pth`). Safetensors files carry
    the exact config, so they reload without guessing."""
    path = Path(path)
    target = DTYPES[dtype] if isinstance(dtype, str) else dtype
    state = {k: (v.to(target) if target is not None and v.is_floating_point() else v).detach().cpu()
             for k, v in cn.state_dict().items()}
    config = {k: v for k, v in cn.config.items() if not k.startswith("_")}
    meta = {CONFIG_METADATA_KEY: json.dumps(config)}
    if layout == "original":
        if cn.config.copy != "full":
            raise ValueError("a ControlNet-lite has no original-layout equivalent; save it in the diffusers layout")
        state = {PREFIX + k: v for k, v in ours_to_original(state, cn.config.layers_per_block).items()}
    elif layout != "diffusers":
        raise ValueError(f"layout must be 'diffusers' or 'original', got {layout!r}")
    if path.suffix in PICKLE_SUFFIXES:
        with atomic_file(path) as tmp:
            torch.save(state, tmp)
        return path
    if path.suffix == ".safetensors":
        write_safetensors(state, path, meta)
        return path
    if layout == "original":
        raise ValueError("the original layout is a single file: give a .safetensors or .pth path")
    path.mkdir(parents=True, exist_ok=True)
    write_safetensors(state, path / "diffusion_pytorch_model.safetensors", meta)
    diffusers_compatible = all(config.get(k, v) == v for k, v in OWN_DEFAULTS.items())
    header = {"_class_name": "ControlNetModel" if diffusers_compatible else "ControlNet", "_diffusers_version": _diffusers_version()}
    body = {k: v for k, v in config.items() if not (diffusers_compatible and k in OWN_DEFAULTS)}
    (path / "config.json").write_text(json.dumps({**header, **body}, indent=2, sort_keys=True) + "\n")
    return path


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
