"""A union ControlNet's extra config read off its tensors (diffusers key names, as every public file has).

`task_embedding` is (control types, channels): 6 types for xinsir's union, 8 for ProMax. The
control-type embedding's input is `addition_time_embed_dim × types`, which fixes SDXL's time-id
width exactly (no convention needed). Only the transformer's head count is invisible: 8, xinsir's.
"""

from __future__ import annotations

import re

from controlnet.errors import CheckpointError

HEADS = 8  # xinsir's num_trans_head; not visible in any shape


def infer_union(state: dict, source: str = "checkpoint") -> dict:
    """num_control_type, num_trans_* and addition_time_embed_dim of a union state dict."""
    task = state["task_embedding"]
    if task.ndim != 2 or 0 in task.shape:
        raise CheckpointError(f"{source}: task_embedding has shape {tuple(task.shape)}; a union ControlNet's is "
                              "(control types, channels), (6, 320) for xinsir's union and (8, 320) for ProMax")
    types, width = task.shape
    try:
        control_in = state["control_add_embedding.linear_1.weight"].shape[1]
        proj = state["spatial_ch_projs.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"{source}: a union ControlNet (task_embedding present) without {exc.args[0]!r}; "
                              "the file is incomplete") from None
    if control_in % types:
        raise CheckpointError(f"{source}: control_add_embedding takes {control_in} inputs, not a multiple of the "
                              f"{types} control types of task_embedding; the file is damaged or not a union ControlNet")
    layers = {int(m.group(1)) for k in state if (m := re.match(r"transformer_layes\.(\d+)\.", k))}
    return {
        "num_control_type": types,
        "num_trans_channel": width,
        "num_trans_head": HEADS if width % HEADS == 0 else 1,
        "num_trans_layer": len(layers),
        "num_proj_channel": proj,
        "addition_time_embed_dim": control_in // types,
    }


def with_union_fields(config: dict, state: dict, source: str) -> dict:
    """A stored config (a diffusers folder's config.json) completed by the tensors' union fields."""
    return {**infer_union(state, source), **config} if "task_embedding" in state else config
