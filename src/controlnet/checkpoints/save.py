"""`save_controlnet`: a ControlNet out in the diffusers layout (folder or file) or the original one.

Every file is written atomically (`controlnet.files.atomic_file`): a failure (full disk, Ctrl-C)
leaves the old file as it was and no partial file. What the output path can hold is checked before
any work, so a wrong path costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import torch

from controlnet.checkpoints.io import PICKLE_SUFFIXES, save_safetensors, write_safetensors
from controlnet.checkpoints.layouts import PREFIX
from controlnet.checkpoints.original_keys import ours_to_original
from controlnet.checkpoints.stored import CONFIG_METADATA_KEY, WEIGHTS_NAMES
from controlnet.dtypes import parse_dtype
from controlnet.errors import InputError
from controlnet.files import atomic_file
from controlnet.nn.controlnet import OWN_DEFAULTS, ControlNet

LAYOUTS = ("diffusers", "original")


def output_kind(path: str | os.PathLike, layout: str, copy: str = "full") -> str:
    """"pickle", "safetensors" or "folder": what `save_controlnet` writes at `path` in `layout`;
    an InputError names the problem when the path cannot hold it."""
    path = Path(path)
    if layout not in LAYOUTS:
        raise InputError(f"layout must be 'diffusers' or 'original', got {layout!r}")
    if layout == "original" and copy != "full":
        raise InputError("a ControlNet-lite has no original-layout equivalent; save it in the diffusers layout")
    kind = "pickle" if path.suffix in PICKLE_SUFFIXES else "safetensors" if path.suffix == ".safetensors" else "folder"
    if kind == "folder" and layout == "original":
        raise InputError(f"{path}: the original layout is a single file: give a .safetensors or .pth name")
    if kind != "folder" and path.is_dir():
        raise InputError(f"{path} is a folder; give a new file name (or a folder name for a diffusers folder)")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file, but a diffusers ControlNet is written as a folder: give a folder "
                         "name, or a .safetensors name for a single file")
    return kind


def save_controlnet(
    cn: ControlNet,
    path: str | os.PathLike,
    *,
    layout: str = "diffusers",
    dtype: torch.dtype | str | None = None,
) -> Path:
    """Write `cn` as a diffusers folder (path without suffix), a diffusers single file, or an
    original-layout file (`control_model.` keys, `.safetensors` or `.pth`). `dtype` (any spelling)
    casts floating tensors. Safetensors files carry the exact config, so they reload without guessing."""
    path, target = Path(path), parse_dtype(dtype)
    if getattr(cn, "is_adapter", False) or getattr(cn, "is_xs", False):
        return _save_adapter(cn, path, layout, target)
    kind = output_kind(path, layout, cn.config.copy)
    if layout == "original" and cn.diffusers_class_name != "ControlNetModel":
        raise InputError(f"a {cn.diffusers_class_name} has no original-layout equivalent (its public files all use "
                         "diffusers key names); save it in the diffusers layout")
    state, config = cpu_state(cn, target), public_config(cn)
    if layout == "original":
        state = {PREFIX + k: v for k, v in ours_to_original(state, cn.config.layers_per_block).items()}
    return write_checkpoint(path, kind, state, config, cn.diffusers_class_name)


def cpu_state(module: torch.nn.Module, target: torch.dtype | None) -> dict:
    """The module's tensors on the CPU, floating ones cast to `target` (None keeps them)."""
    return {k: (v.to(target) if target is not None and v.is_floating_point() else v).detach().cpu()
            for k, v in module.state_dict().items()}


def public_config(module) -> dict:
    """The config without diffusers' private `_…` keys: what a saved file carries."""
    return {k: v for k, v in module.config.items() if not k.startswith("_")}


def write_checkpoint(path: Path, kind: str, state: dict, config: dict, class_name: str) -> Path:
    """`state` as `output_kind`'s `kind` (pickle, safetensors or folder), atomically, with `config` in
    the safetensors header; a folder's config.json names `class_name`."""
    meta = {CONFIG_METADATA_KEY: json.dumps(config)}
    if kind == "pickle":
        with atomic_file(path) as tmp:
            torch.save(state, tmp)
    elif kind == "safetensors":
        write_safetensors(state, path, meta)
    else:
        _write_folder(path, state, config, meta, class_name)
    return path


def _write_folder(path: Path, state: dict, config: dict, meta: dict, class_name: str = "ControlNetModel") -> None:
    """Weights and config.json, both complete before either replaces an old one."""
    diffusers_compatible = all(config.get(k, v) == v for k, v in OWN_DEFAULTS.items())
    header = {"_class_name": class_name if diffusers_compatible else "ControlNet",
              "_diffusers_version": _diffusers_version()}
    body = {k: v for k, v in config.items() if not (diffusers_compatible and k in OWN_DEFAULTS)}
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_file(path / WEIGHTS_NAMES[0]) as weights, atomic_file(path / "config.json") as config_file:
            save_safetensors(state, weights, meta, destination=path / WEIGHTS_NAMES[0])
            config_file.write_text(json.dumps({**header, **body}, indent=2, sort_keys=True) + "\n")
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise


def _save_adapter(net, path: Path, layout: str, target) -> Path:
    """A T2I-Adapter or ControlNet-XS adapter in diffusers' layout: a folder (`T2IAdapter` /
    `ControlNetXSAdapter.from_pretrained` loads it) or one file carrying its config."""
    name = type(net.adapter).__name__
    if layout != "diffusers" or path.suffix in PICKLE_SUFFIXES:
        raise InputError(f"{path}: a {name} is written in the diffusers layout only (a folder or a .safetensors file)")
    state, config = cpu_state(net.adapter, target), public_config(net.adapter)
    if path.suffix == ".safetensors":
        write_safetensors(state, path, {CONFIG_METADATA_KEY: json.dumps(config)})
    else:
        _write_folder(path, state, config, {}, class_name=name)
    return path


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__
