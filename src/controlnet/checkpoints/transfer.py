"""Moving a ControlNet to a community fine-tune of its base model (paper §4.5, `tool_transfer_control.py`).

The ControlNet's copied weights learnt on top of the base U-Net's encoder; adding the fine-tune's
offset (community − base) to each copied tensor puts the copy on top of the fine-tune's encoder.
Tensors the U-Net does not have (hint encoder, zero convs) are kept as they are.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from controlnet.checkpoints.config_files import read_json_config
from controlnet.checkpoints.io import check_finite, read_tensors
from controlnet.checkpoints.original_keys import original_to_ours
from controlnet.errors import CheckpointError
from controlnet.nn.controlnet import ControlNet

SD_PREFIX = "model.diffusion_model."
ENCODER_ORIGINAL = re.compile(r"(time_embed|label_emb|input_blocks|middle_block)\.")
ENCODER_OURS = re.compile(r"(conv_in|time_embedding|add_embedding|class_embedding|down_blocks|mid_block)\.")


def read_unet_encoder(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder half of an SD U-Net, in our key names, from a diffusers pipeline or `unet/`
    folder, a diffusers U-Net file, or a single-file SD checkpoint (`model.diffusion_model.*`)."""
    path = Path(path)
    if path.is_dir():
        folder = path / "unet" if (path / "unet").is_dir() else path
        weights = next((folder / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
                        if (folder / n).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{path}: no U-Net weights (expected unet/diffusion_pytorch_model.safetensors)")
        state, _ = read_tensors(weights)
        layers = read_json_config(folder / "config.json").get("layers_per_block") if (folder / "config.json").is_file() else None
    else:
        state, _ = read_tensors(path)
        layers = None
    if any(k.startswith(SD_PREFIX) for k in state):
        bare = {k[len(SD_PREFIX):]: v for k, v in state.items() if k.startswith(SD_PREFIX)}
        encoder = {k: v for k, v in bare.items() if ENCODER_ORIGINAL.match(k)}
        try:
            encoder = original_to_ours(encoder, layers)
        except KeyError as exc:
            raise CheckpointError(f"{path}: U-Net key {exc.args[0]!r} fits no Stable Diffusion encoder module") from None
    else:
        encoder = {k: v for k, v in state.items() if ENCODER_OURS.match(k)}
    if not encoder:
        raise CheckpointError(f"{path}: no Stable Diffusion U-Net weights found (neither model.diffusion_model.* nor diffusers U-Net keys)")
    check_finite(encoder, str(path))
    return encoder


def transfer_control(control: ControlNet, base: dict[str, torch.Tensor], community: dict[str, torch.Tensor]) -> tuple[ControlNet, int]:
    """control + (community − base) on every copied tensor, in place; returns (control, tensors moved)."""
    _check_same_tensors(control, base, community)
    moved = 0
    with torch.no_grad():
        for name, param in control.state_dict().items():
            if name not in base or name not in community:
                continue
            b, c = base[name], community[name]
            if b.shape != param.shape or c.shape != param.shape:
                raise CheckpointError(
                    f"{name}: ControlNet {tuple(param.shape)}, base {tuple(b.shape)}, community {tuple(c.shape)}: "
                    "the three models are not of the same family"
                )
            param.copy_((param.float() + (c.float() - b.float())).to(param.dtype))
            moved += 1
    if moved == 0:
        raise CheckpointError("no tensor of the ControlNet matched the base U-Net: wrong base model?")
    return control, moved


def _check_same_tensors(control: ControlNet, base: dict, community: dict) -> None:
    """Base and community must hold the same copied tensors, or the offset would be partial."""
    names = [n for n in control.state_dict() if n in base or n in community]
    for have, lack, a, b in ((base, community, "base", "community"), (community, base, "community", "base")):
        missing = [n for n in names if n in have and n not in lack]
        if missing:
            raise CheckpointError(
                f"the {b} model lacks {len(missing)} U-Net tensors the {a} model has (first: {', '.join(missing[:3])}): "
                "base and community must be the same architecture"
            )
