"""The families beyond the classic ControlNet, one entry each: how a file of the family is read
into our key names, built into a network, and described by `controlnet inspect`.

`detect_layout` names the family from the keys; `load_controlnet` and `inspect` look it up here,
so adding a family is one entry in `FAMILIES` (and one detection rule in `layouts.py`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from controlnet.checkpoints import control_lora, lllite, t2i_adapter
from controlnet.checkpoints.stored import init_kwargs, load_strictly
from controlnet.errors import CheckpointError


@dataclass(frozen=True)
class Family:
    read: Callable[[dict, str], dict]                   # (file tensors, source) -> state in our key names
    build: Callable[[dict, dict | None, object, str], object]  # (state, stored config, base U-Net, source) -> network
    describe: Callable[[dict, str], dict]        # (state, source) -> inspect's family-specific lines


def _build_control_lora(state: dict, config: dict | None, base, source: str):
    if base is None:
        raise control_lora.needs_base(source, state)
    return control_lora.build_control_lora(state, base_unet(base), source)


def _describe_control_lora(state: dict, source: str) -> dict:
    return {"family": "control-lora", "made_for": control_lora.made_for(state),
            "rank": "/".join(map(str, control_lora.ranks(state))),
            "hint_channels": state["controlnet_cond_embedding.conv_in.weight"].shape[1]
            if "controlnet_cond_embedding.conv_in.weight" in state else None}


def _build_t2i_adapter(state: dict, config: dict | None, base, source: str):
    return t2i_adapter.build(state, config, source)


def _xs_made_for(state: dict) -> str:
    cross = next((v.shape[1] for k, v in state.items() if k.endswith("attn2.to_k.weight")), None)
    return f"{ {768: 'SD 1.x', 1024: 'SD 2.x', 2048: 'SDXL'}.get(cross, 'a custom base')} (cross-attention width {cross})"


def _build_controlnet_xs(state: dict, config: dict | None, base, source: str):
    """diffusers' `ControlNetXSAdapter` from a folder's config.json (or the config this package stores)."""

    from diffusers import ControlNetXSAdapter

    from controlnet.nn.controlnet_xs import ControlNetXSNet

    if not config:
        raise CheckpointError(f"{source}: a ControlNet-XS made for {_xs_made_for(state)} without its config.json; give "
                              "its diffusers folder (config.json beside the weights): its widths are not all in the shapes")
    try:
        adapter = ControlNetXSAdapter(**init_kwargs(config, ControlNetXSAdapter))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise CheckpointError(f"{source}: its config.json does not build a ControlNet-XS adapter: {exc}") from None
    return ControlNetXSNet(load_strictly(adapter, state, source, "ControlNet-XS")).eval()


def _describe_controlnet_xs(state: dict, source: str) -> dict:
    return {"family": "controlnet-xs", "made_for": _xs_made_for(state),
            "hint_channels": state["controlnet_cond_embedding.conv_in.weight"].shape[1]
            if "controlnet_cond_embedding.conv_in.weight" in state else None}


FAMILIES: dict[str, Family] = {
    "control-lora": Family(control_lora.control_lora_to_ours, _build_control_lora, _describe_control_lora),
    "t2i-adapter": Family(lambda tensors, source: tensors, _build_t2i_adapter, t2i_adapter.describe),
    "t2i-adapter-original": Family(t2i_adapter.original_to_diffusers, _build_t2i_adapter, t2i_adapter.describe),
    "controlnet-xs": Family(lambda tensors, source: tensors, _build_controlnet_xs, _describe_controlnet_xs),
    "controlnet-lllite": Family(lambda tensors, source: tensors, lllite.build, lllite.describe),
}


def base_unet(base):
    """A U-Net from `base`: a diffusers `UNet2DConditionModel`, a pipeline holding one, or the path
    of a diffusers base-model folder (or its `unet/` folder)."""
    if hasattr(base, "unet"):
        base = base.unet
    if isinstance(base, (str, os.PathLike)):
        from diffusers import UNet2DConditionModel

        folder = Path(base)
        folder = folder / "unet" if (folder / "unet").is_dir() else folder
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{base}: not a diffusers base model folder (no unet/config.json); give the folder "
                                  "of the base model the file was made for")
        try:
            return UNet2DConditionModel.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the base U-Net in {folder}: {str(exc).splitlines()[0]}") from None
    if not hasattr(base, "config") or not hasattr(base, "state_dict"):
        raise CheckpointError(f"base must be a diffusers U-Net, a pipeline or a base model folder, got {type(base).__name__}")
    return base
