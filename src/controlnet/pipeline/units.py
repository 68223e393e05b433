"""`ControlUnit`: one ControlNet, its condition image and how it is applied (A1111's "unit")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controlnet.errors import InputError
from controlnet.pipeline.images import resize_mode
from controlnet.pipeline.modes import mode_name


@dataclass
class ControlUnit:
    """One ControlNet applied to the sampling.

    controlnet: a `controlnet.nn.ControlNet`.
    image: the condition map (path, PIL, numpy, tensor in [0, 1]); a list gives one per image.
    weight: multiplies every residual. start, end: fractions of the sampling steps in which the unit
        acts (diffusers' rule: step i acts when i/N >= start and (i+1)/N <= end); outside, its
        ControlNet is not run at all. `end=0` switches the unit off.
    mode: balanced | prompt | control | cfg_rw (`controlnet.pipeline.modes`).
    layer_scales: one scale per connection (13 SD1/2, 10 SDXL), replacing the mode's; final scales
        are `weight · layer_scales[i]`.
    mask: where the unit acts (image, 1 = act); residuals are multiplied by it at each resolution.
    resize: how the image is fitted to the output size: crop_and_resize (default), just_resize,
        resize_and_fill, or None (the image must already have the output size).
    """

    controlnet: Any
    image: Any
    weight: float = 1.0
    start: float = 0.0
    end: float = 1.0
    mode: str = "balanced"
    layer_scales: Sequence[float] | None = None
    mask: Any = None
    resize: str | None = "crop_and_resize"
    name: str = field(default="", compare=False)

    def __post_init__(self):
        label = self.name or "control unit"
        for attr in ("weight", "start", "end"):
            value = getattr(self, attr)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"{label}: {attr} must be a finite number, got {value!r}")
            setattr(self, attr, float(value))
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0):
            raise InputError(f"{label}: start and end are fractions of the steps in [0, 1], got {self.start}, {self.end}")
        if self.start >= self.end and self.end != 0.0:
            raise InputError(
                f"{label}: start ({self.start}) must be before end ({self.end}); the unit would never act "
                "(use end=0 or weight=0 to switch it off on purpose)"
            )
        try:
            self.mode = mode_name(self.mode)
        except ValueError as exc:
            raise InputError(f"{label}: {exc}") from None
        self.resize = resize_mode(self.resize)
        if self.layer_scales is not None:
            scales = list(self.layer_scales)
            if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in (float(x) for x in scales)):
                raise InputError(f"{label}: layer_scales must be finite numbers")
            self.layer_scales = [float(s) for s in scales]
        if self.controlnet is None or not hasattr(self.controlnet, "embed_hint"):
            raise InputError(
                f"{label}: controlnet must be a controlnet.nn.ControlNet (load one with controlnet.load_controlnet; "
                "a diffusers ControlNetModel converts with ControlNet.from_diffusers)"
            )

    @property
    def off(self) -> bool:
        """A unit that can never change the result (its ControlNet is never run)."""
        return self.end == 0.0 or self.weight == 0.0
