"""Key names of the original (lllyasviel / LDM) layout ↔ ours (= diffusers'), as one generated table.

original                                  ours
time_embed.{0,2}                          time_embedding.linear_{1,2}
label_emb.0.{0,2}                         add_embedding.linear_{1,2}           (SDXL)
input_blocks.i.0 / .1 / .0.op             connection i (`nn.connections`): conv_in; a resnet /
                                          its attention; a downsampler's conv
middle_block.{0,1,2}                      mid_block.resnets.0 / attentions.0 / resnets.1
input_hint_block.{0, 2, ..., 2n}          controlnet_cond_embedding.conv_in / blocks.{0..n-2} / conv_out
zero_convs.i.0                            controlnet_down_blocks.i
middle_block_out.0                        controlnet_mid_block

Inside a resnet the module names differ too (`RESNET_RENAMES`). The table maps module prefixes;
a key is renamed by its longest prefix in the table, and the reverse direction is the same table
inverted. The same table maps an SD U-Net's encoder (`model.diffusion_model.*`), which is how
`transfer` lines a community model up with the ControlNet's copy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from controlnet.nn.connections import connections

RESNET_RENAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
FIXED = {
    "time_embed.0": "time_embedding.linear_1",
    "time_embed.2": "time_embedding.linear_2",
    "label_emb.0.0": "add_embedding.linear_1",
    "label_emb.0.2": "add_embedding.linear_2",
    "middle_block.1": "mid_block.attentions.0",
    "middle_block_out.0": "controlnet_mid_block",
}


def _resnet(original: str, ours: str) -> dict[str, str]:
    return {f"{original}.{a}": f"{ours}.{b}" for a, b in RESNET_RENAMES.items()}


def key_table(levels: int, layers_per_block: int, hint_indices: Sequence[int] = ()) -> dict[str, str]:
    """{original module prefix: our module prefix} for a model of `levels` levels and
    `layers_per_block` resnets per level, whose hint encoder has convs at `hint_indices`."""
    table = {**FIXED, **_resnet("middle_block.0", "mid_block.resnets.0"), **_resnet("middle_block.2", "mid_block.resnets.1")}
    for c in connections({"block_out_channels": [0] * levels, "layers_per_block": layers_per_block})[:-1]:
        i = c.index
        table[f"zero_convs.{i}.0"] = f"controlnet_down_blocks.{i}"
        if c.kind == "conv_in":
            table[f"input_blocks.{i}.0"] = "conv_in"
        elif c.kind == "downsampler":
            table[f"input_blocks.{i}.0.op"] = f"down_blocks.{c.block}.downsamplers.0.conv"
        else:
            table.update(_resnet(f"input_blocks.{i}.0", f"down_blocks.{c.block}.resnets.{c.layer}"))
            table[f"input_blocks.{i}.1"] = f"down_blocks.{c.block}.attentions.{c.layer}"
    hint = sorted(hint_indices)
    names = ["conv_in"] + [f"blocks.{k}" for k in range(len(hint) - 2)] + ["conv_out"]
    table.update({f"input_hint_block.{i}": f"controlnet_cond_embedding.{n}" for i, n in zip(hint, names)})
    return table


def rename(key: str, table: dict[str, str]) -> str | None:
    """`key` with its longest module prefix found in `table` replaced; None when none is."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in table:
            return ".".join([table[prefix], *parts[n:]])
    return None


def _indices(keys, pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def layers_per_block_of_original(keys) -> int:
    """L from an original-layout key set: the first downsampler sits at input_blocks.(L+1)."""
    ops = _indices(keys, r"input_blocks\.(\d+)\.0\.op\.")
    if ops:
        return ops[0] - 1
    blocks = _indices(keys, r"input_blocks\.(\d+)\.")
    return max(blocks) if blocks else 0


def hint_block_indices(keys) -> list[int]:
    return _indices(keys, r"input_hint_block\.(\d+)\.")


def _renamed(state: dict, table: dict[str, str]) -> dict:
    out = {}
    for key, value in state.items():
        new = rename(key, table)
        if new is None:
            raise KeyError(key)
        out[new] = value
    return out


def original_to_ours(state: dict, layers_per_block: int | None = None) -> dict:
    """Rename every key of a bare original-layout ControlNet (or U-Net encoder) state dict; a key
    that fits no module raises KeyError(key)."""
    L = layers_per_block if layers_per_block is not None else layers_per_block_of_original(state)
    blocks = _indices(state, r"input_blocks\.(\d+)\.")
    levels = max(blocks, default=0) // (L + 1) + 2  # one more than the keys show: a partial state dict maps too
    return _renamed(state, key_table(levels, L, hint_block_indices(state)))


def ours_to_original(state: dict, layers_per_block: int) -> dict:
    """The inverse of `original_to_ours` (bare keys, no `control_model.` prefix)."""
    levels = max(_indices(state, r"down_blocks\.(\d+)\."), default=0) + 2  # as above
    hint_blocks = len(_indices(state, r"controlnet_cond_embedding\.blocks\.(\d+)\."))
    table = key_table(levels, layers_per_block, range(0, 2 * hint_blocks + 3, 2))
    return _renamed(state, {ours: original for original, ours in table.items()})
