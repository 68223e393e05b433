"""What a checkpoint stores beside its tensors, shared by loading and saving of every family: the
weight-file names of a diffusers folder, the config carried in a safetensors header, and the check
that a state dict fits the network built for it."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch

from controlnet.errors import CheckpointError

CONFIG_METADATA_KEY = "controlnet_config"
WEIGHTS_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors", "diffusion_pytorch_model.bin")


def stored_config(metadata: dict, path: Path) -> dict | None:
    """The config a safetensors header carries (files this package writes), None when there is none."""
    if CONFIG_METADATA_KEY not in metadata:
        return None
    try:
        stored = json.loads(metadata[CONFIG_METADATA_KEY])
    except (json.JSONDecodeError, RecursionError):
        stored = None
    if not isinstance(stored, dict):
        raise CheckpointError(f"{path}: the config stored in the file's header is corrupt; pass config= to load it")
    return stored


def init_kwargs(config: dict, *classes: type) -> dict:
    """The entries of `config` that the classes' `__init__` take: a stored config also carries
    diffusers' bookkeeping and keys of other versions."""
    allowed = {p for c in classes for p in inspect.signature(c.__init__).parameters} - {"self", "kwargs"}
    return {k: v for k, v in config.items() if k in allowed}


def load_strictly(module: torch.nn.Module, state: dict, source: str, what: str, assign: bool = False) -> torch.nn.Module:
    """`module` (a diffusers adapter built from its config) with `state` loaded strictly, in eval mode;
    a state that does not fit it is one line naming `what` and the first misfit. `assign`: for a
    module built on the meta device (the tensors become its parameters)."""
    expected = module.state_dict()
    misfit = [k for k in expected if k not in state] + [k for k in state if k not in expected]
    misfit += [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
               if k in state and state[k].shape != v.shape]
    if misfit:
        raise CheckpointError(f"{source}: a {what} whose tensors do not fit its config ({len(misfit)}, first: "
                              f"{misfit[0]}): the file is truncated or damaged")
    module.load_state_dict(state, strict=True, assign=assign)
    return module.eval()


def check_keys(cn: torch.nn.Module, state: dict, path: Path, layout: str) -> None:
    """Refuse a state dict that does not fit the network built for it, naming what is off."""
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
