"""Checkpoint formats: the original (lllyasviel) and diffusers layouts, detected from keys."""

from controlnet.checkpoints.config_files import config_from_original_yaml
from controlnet.checkpoints.convert import convert_controlnet, transfer_controlnet
from controlnet.checkpoints.infer import infer_config
from controlnet.checkpoints.io import read_tensors, write_safetensors
from controlnet.checkpoints.layouts import detect_layout
from controlnet.checkpoints.load import load_controlnet, read_controlnet_state
from controlnet.checkpoints.original_keys import original_to_ours, ours_to_original
from controlnet.checkpoints.save import save_controlnet
from controlnet.checkpoints.transfer import read_unet_encoder, transfer_control

__all__ = [
    "config_from_original_yaml",
    "convert_controlnet",
    "detect_layout",
    "infer_config",
    "load_controlnet",
    "original_to_ours",
    "ours_to_original",
    "read_controlnet_state",
    "read_tensors",
    "read_unet_encoder",
    "save_controlnet",
    "transfer_control",
    "transfer_controlnet",
    "write_safetensors",
]
