"""ControlNet-LLLite files (kohya-ss): `lllite_unet_<target>.{conditioning1.*, down.0, mid.0, up.0}.{weight,bias}`.

Every module's sizes are in its shapes: conditioning1's depth (1/2/3) from how many convs it has and
the second conv's kernel (2 → depth 1, 4 → depth 2), cond_emb_dim from `conditioning1`'s last conv,
the projection's width from `down.0.weight`, mlp_dim from `down.0.weight`'s rows.
"""

from __future__ import annotations

import re

from controlnet.checkpoints.stored import load_strictly
from controlnet.errors import CheckpointError

PREFIX = "lllite_unet_"


def is_lllite(keys) -> bool:
    return any(k.startswith(PREFIX) for k in keys)


def module_names(state: dict) -> list[str]:
    return sorted({k.split(".", 1)[0] for k in state})


def specs(state: dict, source: str) -> dict[str, tuple[int, int, int, int]]:
    """name -> (depth, cond_emb_dim, in_dim, mlp_dim) for each module of the file."""
    from controlnet.nn.lllite import NAME

    out = {}
    for name in module_names(state):
        if not NAME.match(name):
            raise CheckpointError(f"{source}: {name!r} is not a ControlNet-LLLite module (expected "
                                  "lllite_unet_<block>_<i>_1_transformer_blocks_<j>_<attn1|attn2>_<to_q|to_k|to_v>)")
        out[name] = _spec(state, name, source)
    if not out:
        raise CheckpointError(f"{source}: a ControlNet-LLLite file without modules: the file is truncated or damaged")
    return out


def _spec(state: dict, name: str, source: str) -> tuple[int, int, int, int]:
    convs = sorted(int(m[1]) for k in state if (m := re.match(rf"{re.escape(name)}\.conditioning1\.(\d+)\.weight$", k)))
    try:
        down = state[f"{name}.down.0.weight"]
        if convs not in ([0, 2], [0, 2, 4]) or down.ndim != 2:
            raise KeyError(f"{name}.conditioning1" if down.ndim == 2 else f"{name}.down.0.weight (2-D)")
        parts = [*(f"conditioning1.{i}" for i in convs), "down.0", "mid.0", "up.0"]
        if missing := [f"{name}.{p}.{t}" for p in parts for t in ("weight", "bias") if f"{name}.{p}.{t}" not in state]:
            raise KeyError(missing[0])
        last = state[f"{name}.conditioning1.{convs[-1]}.weight"]
        depth = 3 if len(convs) == 3 else {2: 1, 4: 2}.get(state[f"{name}.conditioning1.2.weight"].shape[-1], 0)
    except KeyError as exc:
        raise CheckpointError(f"{source}: a ControlNet-LLLite module without {exc.args[0]!r}: "
                              "the file is truncated or damaged") from None
    if not depth:
        raise CheckpointError(f"{source}: {name}.conditioning1.2 has an unknown kernel size; expected 2 or 4")
    return depth, last.shape[0], down.shape[1], down.shape[0]


def build(state: dict, config: dict | None, base, source: str):
    from controlnet.nn.lllite import LLLiteNet

    return load_strictly(LLLiteNet(specs(state, source)), state, source, "ControlNet-LLLite")


def describe(state: dict, source: str) -> dict:
    found = specs(state, source)
    targets = sorted({re.sub(r"_\d+_1_transformer_blocks.*", "", n.removeprefix(PREFIX)) for n in found})
    depth, cond_emb, _, mlp = next(iter(found.values()))
    return {"family": "controlnet-lllite", "made_for": "sdxl", "modules": len(found),
            "blocks": ", ".join(targets), "depths": "/".join(map(str, sorted({s[0] for s in found.values()}))),
            "cond_emb_dim": cond_emb, "mlp_dim": mlp, "hint_channels": 3}
