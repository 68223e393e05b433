"""`controlnet inspect FILE`: what a checkpoint is, without building anything big."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def describe(path: str | Path) -> dict:
    import torch

    from controlnet.checkpoints import infer_config, read_controlnet_state
    from controlnet.checkpoints.union import with_union_fields
    from controlnet.nn.controlnet import family_of
    from controlnet.nn.union import control_type_names, is_union

    state, stored, layout = read_controlnet_state(path, check=False)  # NaN weights are reported, not refused
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    config = with_union_fields(stored, state, str(path)) if stored is not None else infer_config(state, str(path), Path(path).name)
    dtypes = Counter(str(v.dtype).removeprefix("torch.") for v in state.values())
    union = {"base": family_of(config), "control_types": ", ".join(control_type_names(config["num_control_type"]))
             } if is_union(config) else {}
    return {
        "path": str(path),
        "layout": layout,
        "family": "union" if union else family_of(config),
        **union,
        "parameters": sum(v.numel() for v in state.values()),
        "tensors": len(state),
        "dtype": ", ".join(f"{d} ({n})" for d, n in dtypes.most_common()),
        "hint_channels": config.get("conditioning_channels", 3),
        "block_out_channels": list(config.get("block_out_channels", ())),
        "cross_attention_dim": config.get("cross_attention_dim"),
        "connections": 1 + len([k for k in state if k.startswith("controlnet_down_blocks.") and k.endswith(".weight")]),
        "global_pool": bool(config.get("global_pool_conditions", False)),
        "config_source": "stored in file" if stored is not None else "inferred from shapes",
        "non_finite_tensors": f"{len(nonfinite)} (first: {nonfinite[0]}): the file is corrupt" if nonfinite else "none",
    }


def run(args) -> int:
    info = describe(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if key == "parameters":
            value = f"{value:,}"
        print(f"{key.replace('_', ' '):<{width}}  {value}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("inspect", help="show a ControlNet checkpoint's layout, family, size, hint channels, dtype")
    p.add_argument("file", help="a .safetensors/.pth/.ckpt file or a diffusers ControlNet folder")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)
