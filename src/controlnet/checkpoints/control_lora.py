"""Control-LoRA (Stability AI, 2023): a ControlNet stored as its difference from the base U-Net.

A file marked by a `lora_controlnet` key holds, in the original (LDM) key names,
- `<module>.up` (out, r[, 1, 1]) and `<module>.down` (r, in[, kh, kw]) for every Linear and Conv of
  the copied encoder: the low-rank factors of (W_controlnet − W_unet);
- every other tensor in full: hint encoder, zero convs, norms, biases.

The ControlNet is the base U-Net's encoder copied (`ControlNet.from_unet`), then
`W = W_unet + up @ down` for each factored weight (lora_alpha = r, so the scale is 1) and the full
tensors put in place, as ComfyUI's `ControlLora` and sd-webui-controlnet's `controlnet_lora.py` do.
They recompute `up @ down` in every forward; here it is merged ONCE at load, so sampling costs
exactly a plain ControlNet (benchmarks/control_lora_merge.py measures the difference).

diffusers 0.42 (`ControlNetModel.from_unet(unet).load_lora_adapter(sd, prefix=None)`, with peft)
computes the same weights except one thing: it keeps the U-Net's biases of the factored layers
and ignores the biases the file stores for them. We use the stored biases (ComfyUI, sd-webui);
the two agree when the stored biases equal the base's (tests/test_control_lora.py checks both).
"""

from __future__ import annotations

import torch

from controlnet.checkpoints.original_keys import original_to_ours
from controlnet.errors import CheckpointError
from controlnet.nn.controlnet import ControlNet, family_of

MARKER = "lora_controlnet"
FACTORS = (".up", ".down")


def is_control_lora(keys) -> bool:
    return MARKER in keys


def control_lora_to_ours(tensors: dict, source: str) -> dict:
    """The file's tensors in our (diffusers) key names, factors kept as `<module>.up/.down`."""
    state = {k: v for k, v in tensors.items() if k != MARKER}
    try:
        ours = original_to_ours(state)
    except KeyError as exc:
        raise CheckpointError(f"{source}: a Control-LoRA whose key {exc.args[0]!r} fits no ControlNet module") from None
    unpaired = [k for k in ours if k.endswith(FACTORS) and _partner(k) not in ours]
    if unpaired:
        raise CheckpointError(f"{source}: a Control-LoRA with {len(unpaired)} unpaired low-rank factors "
                              f"(first: {unpaired[0]}): the file is truncated or damaged")
    return ours


def _partner(key: str) -> str:
    return key[:-3] + ".down" if key.endswith(".up") else key[:-5] + ".up"


def factors(state: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (up, down)} of a Control-LoRA state in our key names."""
    return {k[:-3]: (v, state[k[:-3] + ".down"]) for k, v in state.items() if k.endswith(".up")}


def ranks(state: dict) -> list[int]:
    return sorted({up.shape[1] for up, _ in factors(state).values()})


def made_for(state: dict) -> str:
    """The base family a Control-LoRA was made for, from its cross-attention width and text-time embedding."""
    cross = next((down.shape[1] for m, (_, down) in factors(state).items() if m.endswith("attn2.to_k")), None)
    sdxl = any(k.startswith("add_embedding.") for k in state)
    config = {"cross_attention_dim": cross, "addition_embed_type": "text_time" if sdxl else None}
    return f"{family_of(config)} (cross-attention width {cross})"


def base_description(unet) -> str:
    return f"{family_of(unet.config)} (cross-attention width {unet.config.cross_attention_dim})"


def hint_options(state: dict) -> dict:
    """`ControlNet.from_unet` options for the hint encoder the file stores in full."""
    conv_in = state["controlnet_cond_embedding.conv_in.weight"]
    blocks = sorted({int(k.split(".")[2]) for k in state if k.startswith("controlnet_cond_embedding.blocks.")})
    widths = [conv_in.shape[0]] + [state[f"controlnet_cond_embedding.blocks.{i}.weight"].shape[0] for i in blocks[1::2]]
    return dict(hint_channels=conv_in.shape[1], hint_widths=tuple(widths),
                hint_encoder="paper" if conv_in.shape[-1] == 4 else "code")


def build_control_lora(state: dict, unet, source: str) -> ControlNet:
    """The ControlNet of a Control-LoRA (state in our key names) on `unet`, deltas merged once."""
    if "controlnet_cond_embedding.conv_in.weight" not in state:
        raise CheckpointError(f"{source}: a Control-LoRA without its hint encoder (controlnet_cond_embedding / "
                              "input_hint_block tensors): the file is truncated or damaged")
    cn = ControlNet.from_unet(unet, **hint_options(state), load_weights=False, device="meta")
    return _filled(cn, state, unet, source)


def merged(w: torch.Tensor, up: torch.Tensor, down: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """`W + scale · up @ down` (Linear or Conv factors), summed in float32 where the base lives and kept in
    the base's dtype: one layer at a time in extra memory. Every LoRA merge of the package goes here."""
    up, down = up.to(w.device, torch.float32), down.to(w.device, torch.float32)
    return (w.float() + scale * (up.flatten(1) @ down.flatten(1)).reshape(w.shape)).to(w.dtype)


def _filled(cn: ControlNet, state: dict, unet, source: str) -> ControlNet:
    expected = cn.state_dict()
    base = {k: v for k, v in unet.state_dict().items() if k in expected}
    weights = {}
    for module, (up, down) in factors(state).items():
        key = module + ".weight"
        if key not in base:
            _refuse(source, state, unet, f"{module} has low-rank factors but the base has no such layer")
        w = base[key]
        if up.shape[0] != w.shape[0] or down.shape[1:] != w.shape[1:]:
            _refuse(source, state, unet, f"{module}: factors {tuple(up.shape)} @ {tuple(down.shape)}, base weight {tuple(w.shape)}")
        weights[key] = merged(w, up, down)
    for key, value in state.items():
        if key.endswith(FACTORS):
            continue
        if key not in expected:
            _refuse(source, state, unet, f"the file has {key}, which a ControlNet of this base has not")
        if tuple(value.shape) != tuple(expected[key].shape):
            _refuse(source, state, unet, f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}")
        weights[key] = value
    for key in expected:  # copies: the ControlNet must not share storage with the U-Net it came from
        weights.setdefault(key, base[key].clone() if key in base else None)
    missing = [k for k, v in weights.items() if v is None]
    if missing:
        raise CheckpointError(f"{source}: a Control-LoRA missing {len(missing)} ControlNet tensors (first: {missing[0]}): "
                              "the file is truncated or damaged")
    cn.load_state_dict(weights, strict=True, assign=True)  # load_controlnet casts to the dtype asked for
    return cn


def _refuse(source: str, state: dict, unet, detail: str):
    raise CheckpointError(f"{source}: a Control-LoRA made for a {made_for(state)} base, but the base model given is "
                          f"{base_description(unet)} ({detail}); use it with the base model it was made for")


def needs_base(source: str, state: dict) -> CheckpointError:
    return CheckpointError(
        f"{source}: a Control-LoRA (rank {'/'.join(map(str, ranks(state)))}, made for a {made_for(state)} base) stores "
        "only its difference from the base U-Net: load it with base=<the base model> (the CLI passes generate's "
        "--model, or give convert --base)"
    )
