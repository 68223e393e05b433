"""T2I-Adapter files: TencentARC's original `.pth` layouts renamed to diffusers' `T2IAdapter` keys,
the architecture read off the shapes (or a folder's config.json), built as diffusers' class.

original full (`t2iadapter_*_sd14v1.pth`)      diffusers
conv_in                                        adapter.conv_in
body.{i·R + j}.block{1,2}                      adapter.body.{i}.resnets.{j}.block{1,2}
body.{i·R}.in_conv                             adapter.body.{i}.in_conv      (R resnets per level)
original light (`coadapter`-era color files)
body.{i}.in_conv / out_conv                    adapter.body.{i}.in_conv / out_conv
body.{i}.body.{j}.block{1,2}                   adapter.body.{i}.resnets.{j}.block{1,2}

Full and XL adapters have the same keys; they differ in the pixel-unshuffle factor, which shows in
`conv_in`'s input channels: hint channels × 64 (SD, factor 8) or × 256 (SDXL, factor 16).
"""

from __future__ import annotations

import re

from controlnet.checkpoints.stored import init_kwargs, load_strictly
from controlnet.errors import CheckpointError

ADAPTER_TYPES = ("full_adapter", "full_adapter_xl", "light_adapter")


def is_original(keys) -> bool:
    return "body.0.block1.weight" in keys and "conv_in.weight" in keys or "body.0.body.0.block1.weight" in keys


def is_diffusers(keys) -> bool:
    return any(k.startswith("adapter.body.") for k in keys)


def original_to_diffusers(state: dict, source: str) -> dict:
    if any(k.startswith("style_embedding") for k in state):
        raise CheckpointError(f"{source}: a T2I style adapter (CLIP-vision tokens, not feature maps); not supported")
    light = "body.0.body.0.block1.weight" in state
    per_level = _resnets_per_level(state)
    out = {}
    for key, value in state.items():
        new = _light_key(key) if light else _full_key(key, per_level)
        if new is None:
            raise CheckpointError(f"{source}: key {key!r} fits no T2I-Adapter module")
        out[new] = value
    return out


def _light_key(key: str) -> str | None:
    if m := re.match(r"body\.(\d+)\.body\.(\d+)\.(block[12]\..+)$", key):
        return f"adapter.body.{m[1]}.resnets.{m[2]}.{m[3]}"
    if m := re.match(r"body\.(\d+)\.((in|out)_conv\..+)$", key):
        return f"adapter.body.{m[1]}.{m[2]}"
    return None


def _full_key(key: str, per_level: int) -> str | None:
    if key.startswith("conv_in."):
        return "adapter." + key
    if m := re.match(r"body\.(\d+)\.(in_conv\..+)$", key):
        return f"adapter.body.{int(m[1]) // per_level}.{m[2]}"
    if m := re.match(r"body\.(\d+)\.(block[12]\..+)$", key):
        i, j = divmod(int(m[1]), per_level)
        return f"adapter.body.{i}.resnets.{j}.{m[2]}"
    return None


def _resnets_per_level(state: dict) -> int:
    """R: the first block with an `in_conv` (a change of width) starts level 1; 2 in every public file."""
    starts = sorted({int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.in_conv\.", k)) and m[1] != "0"})
    return starts[0] if starts else 2


def infer_config(state: dict, source: str) -> dict:
    """T2IAdapter(**config) for a state in diffusers' key names."""
    try:
        return _config_from_shapes(state, source)
    except (KeyError, IndexError) as exc:
        raise CheckpointError(f"{source}: a T2I-Adapter without tensor {exc.args[0]!r}: the file is truncated or damaged") from None


def _config_from_shapes(state: dict, source: str) -> dict:
    levels = sorted({int(m[1]) for k in state if (m := re.match(r"adapter\.body\.(\d+)\.", k))})
    resnets = {int(m[1]) for k in state if (m := re.match(r"adapter\.body\.0\.resnets\.(\d+)\.", k))}
    if not levels or not resnets:
        raise CheckpointError(f"{source}: a T2I-Adapter without body tensors: the file is truncated or damaged")
    if "adapter.conv_in.weight" not in state:  # light: in_conv of level 0 reads the unshuffled hint
        first = state["adapter.body.0.in_conv.weight"]
        return dict(adapter_type="light_adapter", in_channels=first.shape[1] // 64, num_res_blocks=len(resnets),
                    downscale_factor=8, channels=[state[f"adapter.body.{i}.out_conv.weight"].shape[0] for i in levels[:-1]])
    conv_in = state["adapter.conv_in.weight"]
    channels = [state[f"adapter.body.{i}.resnets.0.block1.weight"].shape[0] for i in levels]
    for factor, kind in ((8, "full_adapter"), (16, "full_adapter_xl")):
        if conv_in.shape[1] in (factor**2, 3 * factor**2):
            return dict(adapter_type=kind, in_channels=conv_in.shape[1] // factor**2, channels=channels,
                        num_res_blocks=len(resnets), downscale_factor=factor)
    raise CheckpointError(f"{source}: T2I-Adapter conv_in reads {conv_in.shape[1]} channels; expected 64/192 (SD, 1 or 3 "
                          "hint channels) or 256/768 (SDXL)")


def build(state: dict, config: dict | None, source: str):
    """Our `T2IAdapterNet` around diffusers' `T2IAdapter`, loaded strictly."""
    from diffusers import T2IAdapter

    from controlnet.nn.t2i_adapter import T2IAdapterNet

    config = {**infer_config(state, source), **(config or {})}
    adapter = T2IAdapter(**init_kwargs(config, T2IAdapter))
    return T2IAdapterNet(load_strictly(adapter, state, source, f"T2I-Adapter ({config['adapter_type']})")).eval()


def describe(state: dict, source: str) -> dict:
    config = infer_config(state, source)
    return {"family": "t2i-adapter", "adapter_type": config["adapter_type"],
            "made_for": "sdxl" if config["adapter_type"] == "full_adapter_xl" else "sd1/sd2",
            "hint_channels": config["in_channels"], "channels": config["channels"]}
