"""CLIP aesthetic score (the paper's Table 3) from a local head file: the LAION improved-aesthetic-
predictor, an MLP over the L2-normalised CLIP image embedding (`sac+logos+ava1-l14-linearMSE.pth`,
for CLIP ViT-L/14).

The head is `layers.0, .2, .4, .6, .7` Linear layers (768 -> 1024 -> 128 -> 64 -> 16 -> 1) with
dropout between them and no activation, so at evaluation it is a chain of affine maps; any chain of
`layers.K.weight/bias` ending in one output is read the same way. The file is a state dict saved
with `torch.save` (read with `weights_only=True`, never unpickled) or a safetensors file. Nothing
is downloaded: without `--clip` and `--aesthetic` the reports say so.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

from controlnet import checks
from controlnet.errors import InputError, MissingFileError

NOT_COMPUTED = ("not computed: give --clip PATH and --aesthetic FILE (a local CLIP folder and the LAION "
                "improved-aesthetic-predictor head, e.g. sac+logos+ava1-l14-linearMSE.pth)")
_KEY = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(weight|bias)$")


def _read_state(file) -> dict:
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many kinds for a damaged or foreign file
        raise InputError(f"--aesthetic {file}: not a state dict file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise InputError(f"--aesthetic {file}: holds a {type(state).__name__}, not a state dict")
    return state


def load_head(path: str | os.PathLike) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The head's affine layers [(weight, bias), ...] in order, checked to chain into one output."""
    file = checks.path("--aesthetic", path)
    if not file.is_file():
        raise MissingFileError(f"--aesthetic {file}: no such file (the aesthetic head's state dict)")
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _read_state(file).items():
        m = _KEY.match(str(key))
        if m and isinstance(value, torch.Tensor):
            layers.setdefault(int(m.group(1)), {})[m.group(2)] = value.float()
    chain = [layers[k] for k in sorted(layers)]
    if not chain or any(set(c) != {"weight", "bias"} or c["weight"].ndim != 2 for c in chain):
        raise InputError(f"--aesthetic {file}: expected the MLP's layers.K.weight / layers.K.bias (Linear layers)")
    for a, b in zip(chain, chain[1:]):
        if a["weight"].shape[0] != b["weight"].shape[1]:
            raise InputError(f"--aesthetic {file}: layer sizes do not chain ({tuple(a['weight'].shape)} then "
                             f"{tuple(b['weight'].shape)})")
    if chain[-1]["weight"].shape[0] != 1:
        raise InputError(f"--aesthetic {file}: the last layer has {chain[-1]['weight'].shape[0]} outputs, not 1")
    return [(c["weight"], c["bias"]) for c in chain]


def check_head(head, clip) -> None:
    """The head reads the CLIP model's image embedding: their sizes must agree."""
    width, dim = head[0][0].shape[1], clip[0].config.projection_dim
    if width != dim:
        raise InputError(f"--aesthetic reads {width}-d embeddings but --clip gives {dim}-d ones (the LAION head "
                         "sac+logos+ava1-l14 goes with CLIP ViT-L/14: 768)")


@torch.no_grad()
def aesthetic_scores(images, head, clip) -> np.ndarray:
    """One score per picture: the head applied to the normalised CLIP image embedding."""
    from controlnet.evaluation.clip_score import _tensor

    model, processor = clip
    out = []
    for b in range(0, len(images), 16):
        pixels = processor(images=list(images[b:b + 16]), return_tensors="pt")["pixel_values"]
        x = _tensor(model.get_image_features(pixel_values=pixels)).float()
        x = x / x.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        for weight, bias in head:
            x = x @ weight.T + bias
        out.append(x[:, 0].numpy())
    return np.concatenate(out) if out else np.zeros(0)
