"""`load_controlnet`: every public ControlNet layout in.

Loading converts to our native (diffusers) key names, takes the architecture from (in order) an
explicit config, the config stored in the file by this package, or the tensor shapes, then loads
strictly: every tensor must be used and every parameter filled, or the error says which. Weights
come out in float32 unless another dtype is asked for (diffusers' convention), whatever the file
stores: fp16 convolutions on a CPU are several times slower.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from controlnet.checkpoints.config_files import config_override, read_json_config
from controlnet.checkpoints.dit import dit_layout_of, load_dit_controlnet
from controlnet.checkpoints.families import FAMILIES
from controlnet.checkpoints.infer import infer_config
from controlnet.checkpoints.io import check_finite, read_tensors
from controlnet.checkpoints.layouts import PREFIX, control_part, describe_unknown, detect_layout
from controlnet.checkpoints.original_keys import original_to_ours
from controlnet.checkpoints.stored import WEIGHTS_NAMES, check_keys, init_kwargs, stored_config
from controlnet.checkpoints.union import with_union_fields
from controlnet.devices import check_device
from controlnet.dtypes import parse_dtype
from controlnet.errors import CheckpointError
from controlnet.nn.controlnet import ControlNet
from controlnet.nn.union import UnionControlNet, is_union

ORIGINAL_LAYOUTS = ("original", "original-bare", "controlldm")


def read_controlnet_state(path: str | os.PathLike, *, check: bool = True) -> tuple[dict, dict | None, str]:
    """(state dict in our key names, stored config or None, the layout it came in). `check` refuses
    NaN or infinite weights, naming the tensor as the file names it."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path, check)
    tensors, metadata = read_tensors(path)
    layout = detect_layout(tensors)
    if layout == "sd":
        raise CheckpointError(
            f"{path}: this is a Stable Diffusion checkpoint without a ControlNet in it; "
            "pass it as the base model, and a ControlNet file as the control"
        )
    if layout not in ("diffusers", *ORIGINAL_LAYOUTS, *FAMILIES):
        raise CheckpointError(describe_unknown(tensors, str(path)))
    if check:
        check_finite({k: v for k, v in tensors.items() if layout != "controlldm" or k.startswith(PREFIX)}, str(path))
    stored = stored_config(metadata, path)
    if layout in FAMILIES:
        return FAMILIES[layout].read(tensors, str(path)), stored, layout
    if layout == "diffusers":
        return tensors, stored, layout
    try:
        return original_to_ours(control_part(tensors, layout, str(path))), stored, layout
    except KeyError as exc:
        key = exc.args[0] if layout == "original-bare" else PREFIX + exc.args[0]  # as the file names it
        raise CheckpointError(f"{path}: looks like the {layout} layout, but key {key!r} fits no ControlNet module") from None


def _read_folder(path: Path, check: bool) -> tuple[dict, dict, str]:
    if (path / "controlnet" / "config.json").is_file():
        path = path / "controlnet"
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: a folder without config.json is not a diffusers ControlNet folder")
    weights = next((path / n for n in WEIGHTS_NAMES if (path / n).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{path}: no weights file; expected one of {', '.join(WEIGHTS_NAMES)}")
    config = read_json_config(config_file)
    tensors, _ = read_tensors(weights)
    layout = detect_layout(tensors)
    if layout != "diffusers" and layout not in FAMILIES:
        raise CheckpointError(f"{weights}: expected diffusers ControlNet keys, found the {layout!r} layout")
    if check:
        check_finite(tensors, str(weights))
    if layout in FAMILIES:
        return FAMILIES[layout].read(tensors, str(weights)), config, layout
    return tensors, config, "diffusers-folder"


def stored_dtype(state: dict) -> torch.dtype:
    """The floating dtype most of a state dict's tensors are stored in."""
    counts = Counter(v.dtype for v in state.values() if v.is_floating_point())
    return counts.most_common(1)[0][0] if counts else torch.float32


def network_class(config: dict) -> type[ControlNet]:
    """The network a config describes: the family table (`docs/families.md`)."""
    return UnionControlNet if is_union(config) else ControlNet


def _build(config: dict, path: Path, layout: str) -> ControlNet:
    cls = network_class(config)
    try:
        with torch.device("meta"):
            return cls(**init_kwargs(config, ControlNet, cls))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
        raise CheckpointError(f"{path} ({layout} layout): its config does not build a ControlNet: {exc}") from None


def load_controlnet(
    path: str | os.PathLike,
    *,
    config: dict | str | os.PathLike | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    base=None,
) -> ControlNet:
    """A `ControlNet` from any layout: an original 1.0/1.1 `.pth`/`.safetensors` (prefixed, bare or
    full ControlLDM), a diffusers folder or single file. `config` (dict, `config.json`, or an original
    `cldm_*.yaml`) overrides what is stored or inferred. `dtype` (any spelling: fp16, float16,
    torch.float16...) defaults to float32; `loaded_from["dtype"]` tells what the file stores. `base` (a diffusers
    U-Net, pipeline or base folder) is needed by the families stored relative to their base model.
    A Control-LoRA gives a plain ControlNet; a T2I-Adapter or ControlNet-XS file gives that family's
    network (`controlnet.checkpoints.families`); SD3/SD3.5 and Flux ControlNets (`checkpoints.dit`)
    come back as `SD3ControlNet` / `FluxControlNet`."""
    if dit_layout_of(path) is not None:
        return load_dit_controlnet(path, config=config, dtype=dtype, device=device)
    path, target, device = Path(path), parse_dtype(dtype) or torch.float32, check_device(device)
    override = config_override(config)
    state, stored, layout = read_controlnet_state(path)
    if layout in FAMILIES:
        cn = FAMILIES[layout].build(state, stored, base, str(path))
    else:
        found = with_union_fields(stored, state, str(path)) if stored is not None else infer_config(state, str(path), path.name)
        full = {**found, **override}
        cn = _build(full, path, layout)
        check_keys(cn, state, path, layout)
        cn.load_state_dict(state, strict=True, assign=True)
    torch.nn.Module.to(cn, device=device, dtype=target)  # not ModelMixin.to, which warns on every dtype cast
    cn.loaded_from = {"path": str(path), "layout": layout, "dtype": stored_dtype(state),
                      "family": _family(cn, layout)}
    return cn.eval()


def _family(cn, layout: str) -> str:
    """What `loaded_from["family"]` says: the family's name beyond the classic ControlNet, else the base's."""
    if isinstance(cn, UnionControlNet):
        return "union"
    return layout if layout in FAMILIES else cn.family
