"""Seeded inputs of the Depth Anything V2 equality test, shared by the test and make_depth_anything_reference.py.

A tiny model in the published layout of depth_anything_v2_vits.pth (a plain state dict of the authors'
DepthAnythingV2): DINOv2 of 12 blocks (as vits) but width 64 (one 64-wide head), DPT head with
features 16 and projections (8, 16, 32, 32). The names and shapes are written out here from the
authors' code; the reference script loads them strictly into that code, which checks them.
"""

from __future__ import annotations

import torch
from pidinet_inputs import random_state

WEIGHT_SEED = 2
PICTURE_SEEDS = (1701, 1702, 1703)
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))  # (h, w): the network sees 518×784, 784×518, 518×518
DIM, DEPTH, FEATURES, PROJECTIONS, HEAD = 64, 12, 16, (8, 16, 32, 32), 32


def original_shapes(dim=DIM, depth=DEPTH, features=FEATURES, projections=PROJECTIONS, head=HEAD) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the authors' layout: the tiny model, or with (384, 12, 64, (48, 96, 192, 384),
    32) the published vits."""
    DIM, DEPTH, FEATURES, PROJECTIONS, HEAD = dim, depth, features, projections, head  # noqa: N806
    shapes = {"pretrained.cls_token": (1, 1, DIM), "pretrained.mask_token": (1, DIM),
              "pretrained.pos_embed": (1, 37 * 37 + 1, DIM), "pretrained.patch_embed.proj.weight": (DIM, 3, 14, 14),
              "pretrained.patch_embed.proj.bias": (DIM,), "pretrained.norm.weight": (DIM,), "pretrained.norm.bias": (DIM,)}
    for b in range(DEPTH):
        block = f"pretrained.blocks.{b}"
        shapes |= {f"{block}.norm1.weight": (DIM,), f"{block}.norm1.bias": (DIM,), f"{block}.attn.qkv.weight": (3 * DIM, DIM),
                   f"{block}.attn.qkv.bias": (3 * DIM,), f"{block}.attn.proj.weight": (DIM, DIM), f"{block}.attn.proj.bias": (DIM,),
                   f"{block}.ls1.gamma": (DIM,), f"{block}.norm2.weight": (DIM,), f"{block}.norm2.bias": (DIM,),
                   f"{block}.mlp.fc1.weight": (4 * DIM, DIM), f"{block}.mlp.fc1.bias": (4 * DIM,),
                   f"{block}.mlp.fc2.weight": (DIM, 4 * DIM), f"{block}.mlp.fc2.bias": (DIM,), f"{block}.ls2.gamma": (DIM,)}
    head = "depth_head"
    for i, channels in enumerate(PROJECTIONS):
        shapes |= {f"{head}.projects.{i}.weight": (channels, DIM, 1, 1), f"{head}.projects.{i}.bias": (channels,),
                   f"{head}.scratch.layer{i + 1}_rn.weight": (FEATURES, channels, 3, 3)}
    resize = {0: (PROJECTIONS[0], PROJECTIONS[0], 4, 4), 1: (PROJECTIONS[1], PROJECTIONS[1], 2, 2), 3: (PROJECTIONS[3], PROJECTIONS[3], 3, 3)}
    for i, shape in resize.items():
        shapes |= {f"{head}.resize_layers.{i}.weight": shape, f"{head}.resize_layers.{i}.bias": (shape[0],)}
    for r in range(1, 5):
        fusion = f"{head}.scratch.refinenet{r}"
        shapes |= {f"{fusion}.out_conv.weight": (FEATURES, FEATURES, 1, 1), f"{fusion}.out_conv.bias": (FEATURES,)}
        for unit in ("resConfUnit1", "resConfUnit2"):
            for conv in ("conv1", "conv2"):
                shapes |= {f"{fusion}.{unit}.{conv}.weight": (FEATURES, FEATURES, 3, 3), f"{fusion}.{unit}.{conv}.bias": (FEATURES,)}
    shapes |= {f"{head}.scratch.output_conv1.weight": (FEATURES // 2, FEATURES, 3, 3), f"{head}.scratch.output_conv1.bias": (FEATURES // 2,),
               f"{head}.scratch.output_conv2.0.weight": (HEAD, FEATURES // 2, 3, 3), f"{head}.scratch.output_conv2.0.bias": (HEAD,),
               f"{head}.scratch.output_conv2.2.weight": (1, HEAD, 1, 1), f"{head}.scratch.output_conv2.2.bias": (1,)}
    return shapes


def random_depth_anything_state(seed: int = WEIGHT_SEED, shapes=None) -> dict[str, torch.Tensor]:
    """pidinet_inputs.random_state with LayerNorm weights near 1, layer scales 0.5 and a positive last bias,
    so the output, a ReLU, is positive almost everywhere and spans a range (a fresh draw is mostly 0)."""
    state = random_state(shapes or original_shapes(), seed)
    for name in state:
        if ".norm" in name and name.endswith("weight"):
            state[name] = 1.0 + state[name]
        if name.endswith(".gamma"):
            state[name] = 0.5 + state[name]
    state["depth_head.scratch.output_conv2.2.bias"] = torch.tensor([1.0])
    state["pretrained.pos_embed"] = state["pretrained.pos_embed"] * 10.0  # a position signal the depth map shows
    return state
