"""Architecture configs given by the user: a dict, a diffusers `config.json`, or an original `cldm_*.yaml`.

Each file is checked for what it must be (text, valid JSON / YAML, a mapping of config keys), so a
wrong file gets a message naming it instead of a traceback from the parser.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from controlnet.errors import CheckpointError, InputError


def read_json_config(path: Path) -> dict:
    """The object in a JSON config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a text file (binary data where a JSON config was expected)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: JSON nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, expected an object of config keys")
    return data


def read_yaml_config(path: Path) -> dict:
    """Our config from an original `cldm_*.yaml` file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a text file (binary data where a YAML config was expected)") from None
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a YAML {type(data).__name__}, expected a mapping (an original cldm_*.yaml)")
    try:
        return config_from_original_yaml(data)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: not an original ControlNet config (cldm_*.yaml): {exc}") from None


def config_override(config) -> dict:
    """`config=` of `load_controlnet`: None, a dict, a config.json / cldm_*.yaml, or a folder with config.json."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return dict(config)
    if not isinstance(config, (str, os.PathLike)):
        raise InputError(f"config must be a dict or the path of a config.json / cldm_*.yaml, got {type(config).__name__}")
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise CheckpointError(f"config {path}: no such file")
    if path.suffix in (".yaml", ".yml"):
        return read_yaml_config(path)
    return read_json_config(path)


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
