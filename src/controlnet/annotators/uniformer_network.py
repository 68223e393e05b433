"""UniFormer-S with global attention and mmseg's UperNet heads: the network of A1111's `upernet_global_small.pth`.

The backbone is written here, its parameters named as in that file (`backbone.patch_embed1.proj.weight`,
`backbone.blocks3.0.attn.qkv.weight`, ...): stages 1-2 are convolution blocks (batch norm, a 5×5
depthwise "attention"), stages 3-4 global multi-head self-attention blocks (heads of 64 channels), each
stage normalised by a LayerNorm (eps 1e-6) at its output. The decode head (pyramid pooling + FPN,
bilinear resizes without align_corners) and the auxiliary FCN head are transformers' UperNetHead and
UperNetFCNHead, whose layers and arithmetic are mmseg's UPerHead / FCNHead; only the names differ
(`bn` -> `batch_norm`, `conv_seg` -> `classifier`). The auxiliary head is loaded (so the whole file is
checked strictly) but, as in mmseg's inference, never run. Widths and depths are read from the tensors.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from controlnet.errors import InputError

HEAD_DIM = 64  # the published config's head_dim: the number of heads is not in the tensors
POOL_SCALES = (1, 2, 3, 6)
AUX_STAGE = 2  # the auxiliary head reads stage 3 (mmseg's in_index=2)


class PatchEmbed(nn.Module):
    """A strided convolution that cuts the map into patches, then a LayerNorm over channels."""

    def __init__(self, patch: int, dim_in: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        return channel_norm(self.norm, self.proj(x))


def channel_norm(norm: nn.LayerNorm, x):
    """A LayerNorm over the channels of an N×C×H×W map."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class Mlp(nn.Module):
    """Two layers with a GELU between: 1×1 convolutions on maps (`conv`), linear layers on tokens."""

    def __init__(self, dim: int, hidden: int, conv: bool = False):
        super().__init__()
        layer = (lambda i, o: nn.Conv2d(i, o, 1)) if conv else nn.Linear
        self.fc1 = layer(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = layer(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class ConvBlock(nn.Module):
    """UniFormer's CBlock: positional depthwise conv, then 1×1 → 5×5 depthwise → 1×1 "local attention", then an MLP."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv2 = nn.Conv2d(dim, dim, 1)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, hidden, conv=True)

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.conv2(self.attn(self.conv1(self.norm1(x))))
        return x + self.mlp(self.norm2(x))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class AttentionBlock(nn.Module):
    """UniFormer's SABlock: positional depthwise conv, then global self-attention and an MLP over all positions."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        if dim % HEAD_DIM:
            raise ValueError(f"attention width {dim} is not a multiple of the head width {HEAD_DIM}")
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, dim // HEAD_DIM)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.pos_embed(x)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.attn(self.norm1(tokens))
        tokens = tokens + self.mlp(self.norm2(tokens))
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class UniFormer(nn.Module):
    """Four stages at 1/4, 1/8, 1/16, 1/32 of the input; returns each stage's normalised map."""

    def __init__(self, dims=(64, 128, 320, 512), depths=(3, 4, 8, 3), mlp_ratio: int = 4):
        super().__init__()
        for i, (dim, depth) in enumerate(zip(dims, depths), start=1):
            block = ConvBlock if i <= 2 else AttentionBlock
            self.add_module(f"patch_embed{i}", PatchEmbed(4 if i == 1 else 2, 3 if i == 1 else dims[i - 2], dim))
            self.add_module(f"blocks{i}", nn.ModuleList(block(dim, dim * mlp_ratio) for _ in range(depth)))
            self.add_module(f"norm{i}", nn.LayerNorm(dim, eps=1e-6))

    def forward(self, x):
        features = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"blocks{i}"):
                x = block(x)
            features.append(channel_norm(getattr(self, f"norm{i}"), x))
        return features


class UniFormerUperNet(nn.Module):
    """mmseg's EncoderDecoder of upernet_global_small.py: UniFormer backbone, UperNet decode head (and the auxiliary FCN head)."""

    def __init__(self, dims=(64, 128, 320, 512), depths=(3, 4, 8, 3), channels: int = 512, aux_channels: int = 256,
                 num_classes: int = 150, mlp_ratio: int = 4):
        super().__init__()
        from transformers.models.upernet.modeling_upernet import UperNetFCNHead, UperNetHead

        heads = types.SimpleNamespace(pool_scales=POOL_SCALES, hidden_size=channels, num_labels=num_classes,
                                      auxiliary_in_channels=None, auxiliary_channels=aux_channels,
                                      auxiliary_num_convs=1, auxiliary_concat_input=False)
        self.backbone = UniFormer(dims, depths, mlp_ratio)
        self.decode_head = UperNetHead(heads, list(dims))
        self.auxiliary_head = UperNetFCNHead(heads, list(dims), in_index=AUX_STAGE)

    def forward(self, x):
        """Class logits at 1/4 of the input size (mmseg's decode_head output, before any resize)."""
        return self.decode_head(self.backbone(x))


def uniformer_config(state: dict) -> dict:
    """UniFormerUperNet's arguments from the checkpoint's tensors (KeyError / IndexError when it is not one)."""
    dims = tuple(state[f"backbone.patch_embed{i}.proj.weight"].shape[0] for i in range(1, 5))
    depths = tuple(len({k.split(".")[2] for k in state if k.startswith(f"backbone.blocks{i}.")}) for i in range(1, 5))
    hidden = state["backbone.blocks1.0.mlp.fc1.weight"].shape[0]
    return {"dims": dims, "depths": depths, "channels": state["decode_head.bottleneck.conv.weight"].shape[0],
            "aux_channels": state["auxiliary_head.convs.0.conv.weight"].shape[0],
            "num_classes": state["decode_head.conv_seg.weight"].shape[0], "mlp_ratio": hidden // dims[0]}


def rename_heads(state: dict) -> dict:
    """mmseg's head names -> transformers' (ConvModule's `bn`, the classifier `conv_seg`); the backbone keeps its names."""
    def rename(key: str) -> str:
        if key.startswith("backbone."):
            return key
        return key.replace(".bn.", ".batch_norm.").replace(".conv_seg.", ".classifier.")

    return {rename(k): v for k, v in state.items()}


def build_uniformer(state: dict, what: str, path: str):
    """(UniFormerUperNet of the file's widths and depths, on the meta device; the state renamed for it); an
    InputError when `state` is not a UniFormer UperNet (the strict load afterwards catches partial matches)."""
    try:
        config = uniformer_config(state)
        with torch.device("meta"):
            net = UniFormerUperNet(**config)
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as exc:
        raise InputError(f"{path} is not a {what} weight file: no UniFormer UperNet tensors ({exc})") from exc
    return net, rename_heads(state)
