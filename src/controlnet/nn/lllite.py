"""ControlNet-LLLite (kohya-ss, SDXL): one tiny network per chosen attention projection.

Each module (`lllite_unet_{input,middle,output}_block(s)_{i}_1_transformer_blocks_{j}_{attn1,attn2}_to_{q,k,v}`)
embeds the hint once (`conditioning1`: a 4×-stride conv, then one or two more strided convs — its
depth 1/2/3 gives 8×/16×/32× down from the image), and at every step adds
`up(mid([cond_emb, down(x)]))` to the INPUT x of its projection (to_q/to_k/to_v), as kohya's
`networks/control_net_lllite.py` and sd-webui-controlnet do. The hint goes in as `2·hint − 1`.
Several LLLite units on one projection add their scaled outputs, all computed from the same x.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from controlnet.nn.controlnet import _tile_batch
from controlnet.nn.wrapped import FollowsParameters

NAME = re.compile(r"lllite_unet_(?:(input_blocks|output_blocks)_(\d+)|(middle_block))_1_transformer_blocks_(\d+)_(attn[12])_(to_[qkv])$")
_STRIDES = {1: (4, 2), 2: (4, 4), 3: (4, 4, 2)}  # conditioning1's conv strides (= kernels) per depth


class LLLiteModule(nn.Module):
    """One projection's network; parameter names are kohya's (`conditioning1.{0,2,4}`, `down.0`, `mid.0`, `up.0`)."""

    def __init__(self, depth: int, cond_emb_dim: int, in_dim: int, mlp_dim: int):
        super().__init__()
        strides = _STRIDES[depth]
        widths = [3, cond_emb_dim // 2, *([cond_emb_dim // 2] * (len(strides) - 2)), cond_emb_dim]
        layers: list[nn.Module] = []
        for i, s in enumerate(strides):
            layers += [nn.ReLU()] if i else []
            layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=s, stride=s))
        self.conditioning1 = nn.Sequential(*layers)
        self.down = nn.Sequential(nn.Linear(in_dim, mlp_dim), nn.ReLU())
        self.mid = nn.Sequential(nn.Linear(mlp_dim + cond_emb_dim, mlp_dim), nn.ReLU())
        self.up = nn.Sequential(nn.Linear(mlp_dim, in_dim))
        self.depth = depth

    def embed(self, hint: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) hint in [0, 1] -> (B, tokens, cond_emb_dim), once per image."""
        cx = self.conditioning1(hint * 2 - 1)
        return cx.flatten(2).transpose(1, 2)

    def delta(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """What this module adds to its projection's input x (B, tokens, width), in x's dtype."""
        dtype = self.up[0].weight.dtype
        emb = _tile_batch(emb, x.shape[0], "LLLite hint").to(dtype)
        if emb.shape[1] != x.shape[1]:
            raise ValueError(f"LLLite hint gives {emb.shape[1]} tokens where the U-Net has {x.shape[1]}: the hint must be "
                             "8x the latent size (and the file made for this base model)")
        return self.up(self.mid(torch.cat([emb, self.down(x.to(dtype))], dim=2))).to(x.dtype)


class LLLiteNet(FollowsParameters, nn.Module):
    """A whole LLLite file: its modules under their kohya names (so the file loads strictly)."""

    is_lllite = True

    def __init__(self, specs: dict[str, tuple[int, int, int, int]]):
        super().__init__()
        for name, (depth, cond_emb_dim, in_dim, mlp_dim) in specs.items():
            self.add_module(name, LLLiteModule(depth, cond_emb_dim, in_dim, mlp_dim))

    @property
    def made_for(self) -> str:
        return f"SDXL (ControlNet-LLLite, {len(self._modules)} modules)"

    def embed_hint(self, hint: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each module's hint embedding, keyed by module name."""
        return {name: m.embed(hint.to(self.dtype)) for name, m in self.named_children()}

    def forward(self, hint: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.embed_hint(hint)


def is_lllite(net) -> bool:
    return bool(getattr(net, "is_lllite", False))


def target_path(name: str, layers_per_block: int) -> str:
    """The diffusers U-Net module a kohya LLLite module name points at (`...attn1.to_q`)."""
    m = NAME.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a ControlNet-LLLite module name")
    kind, index, block, attn, proj = m[1] or m[3], int(m[2] or 0), int(m[4]), m[5], m[6]
    per_level = layers_per_block + 1
    if kind == "middle_block":
        prefix = "mid_block.attentions.0"
    elif kind == "input_blocks":
        level, j = divmod(index - 1, per_level)
        prefix = f"down_blocks.{level}.attentions.{j}"
    else:
        level, j = divmod(index, per_level)
        prefix = f"up_blocks.{level}.attentions.{j}"
    return f"{prefix}.transformer_blocks.{block}.{attn}.{proj}"


def targets(net: LLLiteNet, unet: nn.Module) -> dict[str, nn.Module]:
    """module name -> the U-Net projection it feeds; ValueError when the U-Net lacks one (another base model)."""
    layers = unet.config["layers_per_block"]
    layers = layers if isinstance(layers, int) else layers[0]
    found = {}
    for name, module in net.named_children():
        path = target_path(name, layers)
        try:
            found[name] = unet.get_submodule(path)
        except AttributeError:
            found[name] = None
        if not isinstance(found[name], nn.Linear) or found[name].in_features != module.down[0].in_features:
            raise ValueError(f"the LLLite file targets {path} ({module.down[0].in_features} wide), which this base U-Net "
                             "does not have: use an LLLite made for this base model (SDXL)")
    return found


@contextlib.contextmanager
def applied(unet: nn.Module, units: Sequence[tuple[LLLiteNet, dict[str, torch.Tensor], float]]) -> Iterator[None]:
    """Within the block, each targeted projection of `unet` takes `x + Σ scale·module(x)` as its input."""
    by_target: dict[nn.Module, list] = {}
    for net, embeddings, scale in units:
        for name, linear in targets(net, unet).items():
            by_target.setdefault(linear, []).append((getattr(net, name), embeddings[name], scale))
    handles = []
    try:
        for linear, entries in by_target.items():
            handles.append(linear.register_forward_pre_hook(_hook(entries)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _hook(entries):
    def add_lllite(module, args):
        x = args[0]
        total = x
        for lllite, emb, scale in entries:
            total = total + lllite.delta(x, emb) * scale
        return (total, *args[1:])
    return add_lllite
