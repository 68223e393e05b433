"""Which layout a state dict is in, told from its keys alone.

- "original": lllyasviel's ControlNet 1.1 files (`control_model.` prefix);
- "original-bare": the same with the prefix stripped (community fp16 files);
- "controlldm": a full ControlLDM checkpoint (ControlNet + SD U-Net + VAE + CLIP, ControlNet 1.0);
- "diffusers": diffusers' `ControlNetModel` key names (also our native layout);
- "control-lora": Stability AI's Control-LoRA (marker key `lora_controlnet`; `checkpoints/control_lora.py`);
- "t2i-adapter", "t2i-adapter-original": diffusers' and TencentARC's T2I-Adapter keys (`checkpoints/t2i_adapter.py`);
- "controlnet-xs": diffusers' ControlNetXSAdapter keys (`checkpoints/families.py`);
- "controlnet-lllite": kohya's ControlNet-LLLite modules (`lllite_unet_*` keys; `checkpoints/lllite.py`);
- "sd": a Stable Diffusion checkpoint with no ControlNet in it (a common mix-up);
- "unknown".
"""

from __future__ import annotations

from controlnet.errors import CheckpointError

PREFIX = "control_model."


def detect_layout(keys) -> str:
    keys = set(keys)
    if "lora_controlnet" in keys:
        return "control-lora"
    if any(k.startswith("adapter.body.") for k in keys):
        return "t2i-adapter"
    if any(k.startswith("lllite_unet_") for k in keys):
        return "controlnet-lllite"
    if any(".base_to_ctrl." in k or k.startswith("base_to_ctrl.") for k in keys):
        return "controlnet-xs"
    if "body.0.block1.weight" in keys or "body.0.body.0.block1.weight" in keys:
        return "t2i-adapter-original"
    if any(k.startswith(PREFIX) for k in keys):
        if any(k.startswith("model.diffusion_model.") for k in keys):
            return "controlldm"
        return "original"
    if "controlnet_cond_embedding.conv_in.weight" in keys or "controlnet_mid_block.weight" in keys:
        return "diffusers"
    if "input_hint_block.0.weight" in keys or "middle_block_out.0.weight" in keys:
        return "original-bare"
    if any(k.startswith("model.diffusion_model.") for k in keys) or "conv_in.weight" in keys and any(
        k.startswith("up_blocks.") for k in keys
    ):
        return "sd"
    return "unknown"


def control_part(state: dict, layout: str, source: str = "checkpoint") -> dict:
    """The bare ControlNet tensors of a state dict in any original-family layout (prefix stripped)."""
    if layout in ("original", "controlldm"):
        return {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if layout == "original-bare":
        return dict(state)
    raise CheckpointError(f"{source}: expected an original-layout ControlNet, found the {layout!r} layout")


def describe_unknown(keys, source: str) -> str:
    sample = ", ".join(sorted(keys)[:6])
    if "difference" in keys:
        return (f"{source}: a 'difference' ControlNet (weights stored relative to an SD U-Net); "
                "add the base U-Net's weights first (`controlnet transfer`) — loading it alone is not supported")
    if any(k.startswith("lora_controlnet") for k in keys) or any("lllite" in k for k in keys):
        return (f"{source}: a Control-LoRA / ControlNet-LLLite file with unexpected key names (a Control-LoRA needs its "
                "lora_controlnet marker, LLLite keys start with lllite_unet_): re-save it from its original source")
    if any(k.startswith("adapter.") or k.startswith("body.") for k in keys):
        return f"{source}: a T2I-Adapter, not a ControlNet"
    return (f"{source}: not a ControlNet checkpoint: none of the original (control_model.*, input_hint_block.*) "
            f"or diffusers (controlnet_cond_embedding.*) keys are present. First keys: {sample}")
