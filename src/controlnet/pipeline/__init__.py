"""Controlled generation: base model + ControlNet units + prompt -> images (`ControlPipeline`)."""

from controlnet.pipeline.images import hint_tensor, resize_mode, to_rgb
from controlnet.pipeline.modes import MODES, mode_scales
from controlnet.pipeline.sampling import (
    ControlPipeline,
    ControlPipelineOutput,
    check_compatible,
    denormalize_latents,
    normalize_latents,
)
from controlnet.pipeline.schedulers import make_scheduler, scheduler_names
from controlnet.pipeline.units import ControlUnit, UnionCondition

__all__ = [
    "MODES",
    "ControlPipeline",
    "ControlPipelineOutput",
    "ControlUnit",
    "UnionCondition",
    "check_compatible",
    "denormalize_latents",
    "hint_tensor",
    "make_scheduler",
    "mode_scales",
    "normalize_latents",
    "resize_mode",
    "scheduler_names",
    "to_rgb",
]
