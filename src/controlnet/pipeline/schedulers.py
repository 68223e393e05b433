"""Samplers by the names users know (A1111 / k-diffusion), built from diffusers' schedulers.

Each call gets a fresh scheduler built from the base model's scheduler config, so the model's
beta schedule, prediction type (ε or v) and timestep spacing carry over and no state leaks
between calls.
"""

from __future__ import annotations

import diffusers

from controlnet.errors import InputError

# name -> (diffusers class, config overrides)
SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm2": ("KDPM2DiscreteScheduler", {}),
    "dpm2_a": ("KDPM2AncestralDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "dpmpp_2s_a": ("DPMSolverSinglestepScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
}
ALIASES = {"euler_ancestral": "euler_a", "euler-a": "euler_a", "dpm++_2m": "dpmpp_2m", "dpm++2m": "dpmpp_2m",
           "dpm++_2m_karras": "dpmpp_2m_karras", "uni_pc": "unipc"}


def scheduler_names() -> list[str]:
    return ["default", *SCHEDULERS]


def make_scheduler(name, base):
    """A new scheduler `name` configured like `base` (the model's scheduler); "default" is a fresh
    copy of `base`. A scheduler object as `name` is copied the same way (never mutated)."""
    if not isinstance(name, str):
        if hasattr(name, "set_timesteps") and hasattr(name, "config"):
            return type(name).from_config(name.config)
        raise InputError(f"scheduler must be a name ({', '.join(scheduler_names())}) or a diffusers scheduler")
    key = ALIASES.get(name.strip().lower(), name.strip().lower())
    if key == "default":
        return type(base).from_config(base.config)
    if key not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}; use one of {', '.join(scheduler_names())}")
    cls_name, overrides = SCHEDULERS[key]
    return getattr(diffusers, cls_name).from_config(dict(base.config), **overrides)
