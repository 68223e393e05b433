"""Key names of the original (lllyasviel / LDM) layout ↔ ours (= diffusers').

original                                  ours
time_embed.{0,2}                          time_embedding.linear_{1,2}
label_emb.0.{0,2}                         add_embedding.linear_{1,2}           (SDXL)
input_blocks.0.0                          conv_in
input_blocks.i.0.<resnet>                 down_blocks.b.resnets.l.<renamed>    b, l = divmod(i-1, L+1)
input_blocks.i.1.<transformer>            down_blocks.b.attentions.l.<same>
input_blocks.i.0.op                       down_blocks.b.downsamplers.0.conv    (l == L)
middle_block.{0,1,2}                      mid_block.resnets.0 / attentions.0 / resnets.1
input_hint_block.{0, 2, ..., 2n}          controlnet_cond_embedding.conv_in / blocks.{0..n-2} / conv_out
zero_convs.i.0                            controlnet_down_blocks.i
middle_block_out.0                        controlnet_mid_block

L is layers per block. The same rules map an SD U-Net's encoder (`model.diffusion_model.*`), which
is how `transfer` lines a community model up with the ControlNet's copy.
"""

from __future__ import annotations

import re

RESNET_RENAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
RESNET_RENAMES_BACK = {v: k for k, v in RESNET_RENAMES.items()}


def _rename_resnet(rest: str, table: dict[str, str]) -> str:
    for old, new in table.items():
        if rest == old or rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def layers_per_block_of_original(keys) -> int:
    """L from an original-layout key set: the first downsampler sits at input_blocks.(L+1)."""
    ops = sorted(int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.", k)))
    if ops:
        return ops[0] - 1
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    return max(blocks) if blocks else 0


def hint_block_indices(keys) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(r"input_hint_block\.(\d+)\.", k))})


def original_to_ours(state: dict, layers_per_block: int | None = None) -> dict:
    """Rename every key of a bare original-layout ControlNet (or U-Net encoder) state dict."""
    L = layers_per_block if layers_per_block is not None else layers_per_block_of_original(state)
    hint = hint_block_indices(state)
    out = {}
    for key, value in state.items():
        new = original_key_to_ours(key, L, hint)
        if new is None:
            raise KeyError(key)
        out[new] = value
    return out


def original_key_to_ours(key: str, L: int, hint_indices: list[int]) -> str | None:
    if m := re.fullmatch(r"time_embed\.([02])\.(\w+)", key):
        return f"time_embedding.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"
    if m := re.fullmatch(r"label_emb\.0\.([02])\.(\w+)", key):
        return f"add_embedding.linear_{1 if m.group(1) == '0' else 2}.{m.group(2)}"
    if m := re.fullmatch(r"input_blocks\.0\.0\.(\w+)", key):
        return f"conv_in.{m.group(1)}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.([01])\.(.+)", key):
        b, layer = divmod(int(m.group(1)) - 1, L + 1)
        part, rest = m.group(2), m.group(3)
        if layer == L:
            if part == "0" and rest.startswith("op."):
                return f"down_blocks.{b}.downsamplers.0.conv.{rest[3:]}"
            return None
        if part == "0":
            return f"down_blocks.{b}.resnets.{layer}.{_rename_resnet(rest, RESNET_RENAMES)}"
        return f"down_blocks.{b}.attentions.{layer}.{rest}"
    if m := re.fullmatch(r"middle_block\.([012])\.(.+)", key):
        i, rest = int(m.group(1)), m.group(2)
        if i == 1 and not _is_resnet_key(rest):
            return f"mid_block.attentions.0.{rest}"
        return f"mid_block.resnets.{0 if i == 0 else 1}.{_rename_resnet(rest, RESNET_RENAMES)}"
    if m := re.fullmatch(r"input_hint_block\.(\d+)\.(\w+)", key):
        i = int(m.group(1))
        if i == hint_indices[0]:
            return f"controlnet_cond_embedding.conv_in.{m.group(2)}"
        if i == hint_indices[-1]:
            return f"controlnet_cond_embedding.conv_out.{m.group(2)}"
        return f"controlnet_cond_embedding.blocks.{hint_indices.index(i) - 1}.{m.group(2)}"
    if m := re.fullmatch(r"zero_convs\.(\d+)\.0\.(\w+)", key):
        return f"controlnet_down_blocks.{m.group(1)}.{m.group(2)}"
    if m := re.fullmatch(r"middle_block_out\.0\.(\w+)", key):
        return f"controlnet_mid_block.{m.group(1)}"
    return None


def _is_resnet_key(rest: str) -> bool:
    return any(rest.startswith(k + ".") for k in RESNET_RENAMES)


def ours_to_original(state: dict, layers_per_block: int) -> dict:
    """The inverse of `original_to_ours` (bare keys, no `control_model.` prefix)."""
    L = layers_per_block
    n_hint_blocks = len({k.split(".")[2] for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    out = {}
    for key, value in state.items():
        new = our_key_to_original(key, L, n_hint_blocks)
        if new is None:
            raise KeyError(key)
        out[new] = value
    return out


def our_key_to_original(key: str, L: int, n_hint_blocks: int) -> str | None:
    if m := re.fullmatch(r"time_embedding\.linear_([12])\.(\w+)", key):
        return f"time_embed.{0 if m.group(1) == '1' else 2}.{m.group(2)}"
    if m := re.fullmatch(r"add_embedding\.linear_([12])\.(\w+)", key):
        return f"label_emb.0.{0 if m.group(1) == '1' else 2}.{m.group(2)}"
    if m := re.fullmatch(r"conv_in\.(\w+)", key):
        return f"input_blocks.0.0.{m.group(1)}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        b, kind, layer, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        i = 1 + b * (L + 1) + layer
        if kind == "resnets":
            return f"input_blocks.{i}.0.{_rename_resnet(rest, RESNET_RENAMES_BACK)}"
        return f"input_blocks.{i}.1.{rest}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(\w+)", key):
        return f"input_blocks.{1 + int(m.group(1)) * (L + 1) + L}.0.op.{m.group(2)}"
    if m := re.fullmatch(r"mid_block\.resnets\.([01])\.(.+)", key):
        return f"middle_block.{0 if m.group(1) == '0' else 2}.{_rename_resnet(m.group(2), RESNET_RENAMES_BACK)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m.group(1)}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_in\.(\w+)", key):
        return f"input_hint_block.0.{m.group(1)}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(\w+)", key):
        return f"input_hint_block.{2 * (int(m.group(1)) + 1)}.{m.group(2)}"
    if m := re.fullmatch(r"controlnet_cond_embedding\.conv_out\.(\w+)", key):
        return f"input_hint_block.{2 * (n_hint_blocks + 1)}.{m.group(1)}"
    if m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(\w+)", key):
        return f"zero_convs.{m.group(1)}.0.{m.group(2)}"
    if m := re.fullmatch(r"controlnet_mid_block\.(\w+)", key):
        return f"middle_block_out.0.{m.group(1)}"
    return None
