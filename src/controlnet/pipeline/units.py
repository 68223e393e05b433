"""`ControlUnit`: one ControlNet, its condition image and how it is applied (A1111's "unit")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controlnet import checks
from controlnet.dtypes import parse_dtype
from controlnet.errors import InputError
from controlnet.pipeline.images import resize_mode
from controlnet.pipeline.modes import mode_name
from controlnet.pipeline.schedule import always_zero, check_interpolation, check_schedule, factor_at


@dataclass(frozen=True)
class UnionCondition:
    """One condition of a union ControlNet's pass: its control type (name or index), image and scale."""

    control_type: str | int
    image: Any
    scale: float = 1.0


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
    dtype: what its ControlNet runs in; None (default) is the U-Net's dtype. The pipeline casts the
        ControlNet module in place (as diffusers' `pipe.to` does) and moves it to the U-Net's device.
    schedule: the weight over the steps, (fraction, factor) keyframes such as [(0, 1), (0.5, 0.3)]
        (or the text "0:1,0.5:0.3"); the scale at step i of N is `weight · factor(i/N) · s_i`
        (`controlnet.pipeline.schedule`). None (default) is a constant factor 1.
    schedule_interpolation: "hold" (default: each factor holds until the next keyframe) or "linear".
    control_type: for a union ControlNet (xinsir union / ProMax), the type of `image`: openpose, depth,
        hed/pidi/scribble/ted, canny/lineart/anime_lineart/mlsd, normal, segment, tile, repaint (or its index).
    conditions: more (control_type, image, scale) conditions for the same union pass (after `image`'s,
        whose scale is 1); `image` may then be None. One condition: its scale multiplies the residuals
        with `weight`; several: each scales its own condition features (diffusers' rule).
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
    dtype: Any = None
    schedule: Any = None
    schedule_interpolation: str = "hold"
    control_type: str | int | None = None
    conditions: Sequence[UnionCondition | tuple] = ()

    def __post_init__(self):
        """Every unit field is checked here, once; the pipeline and the CLI rely on it."""
        label = self.name or "control unit"
        if self.controlnet is None or not hasattr(self.controlnet, "embed_hint"):
            raise InputError(
                f"{label}: controlnet must be a controlnet.nn.ControlNet (load one with controlnet.load_controlnet; "
                "a diffusers ControlNetModel converts with ControlNet.from_diffusers)"
            )
        self._check_conditions(label)
        if (self.image is None and not self.conditions) or isinstance(self.image, (list, tuple)) and not self.image:
            raise InputError(f"{label}: no condition image; give the map its ControlNet was trained on")
        self.weight = checks.number(f"{label}: weight", self.weight, lo=0.0)
        self.start = checks.number(f"{label}: start (a fraction of the steps)", self.start, lo=0.0, hi=1.0)
        self.end = checks.number(f"{label}: end (a fraction of the steps)", self.end, lo=0.0, hi=1.0)
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
            if isinstance(self.layer_scales, (str, bytes)) or not isinstance(self.layer_scales, Sequence):
                raise InputError(f"{label}: layer_scales must be a list of numbers, one per connection")
            self.layer_scales = [checks.number(f"{label}: layer_scales[{i}]", s) for i, s in enumerate(self.layer_scales)]
        self.dtype = parse_dtype(self.dtype, f"{label}: dtype")
        if self.schedule is not None:
            self.schedule = check_schedule(self.schedule, f"{label}: schedule")
        self.schedule_interpolation = check_interpolation(self.schedule_interpolation, f"{label}: schedule_interpolation")

    def _check_conditions(self, label: str) -> None:
        """control_type and conditions: only for a union ControlNet, which needs at least one type."""
        from controlnet.nn.union import UnionControlNet, control_type_index, control_type_names

        if isinstance(self.conditions, (str, bytes)) or not isinstance(self.conditions, Sequence):
            raise InputError(f"{label}: conditions must be a list of (control_type, image, scale) conditions")
        conditions = [c if isinstance(c, UnionCondition) else _condition(c, label) for c in self.conditions]
        if not isinstance(self.controlnet, UnionControlNet):
            if self.control_type is not None or conditions:
                raise InputError(f"{label}: a control type is for union ControlNets (xinsir union / ProMax); this is a "
                                 "plain ControlNet, which reads one kind of map: drop the control type")
            return
        if self.control_type is None and not conditions:
            raise InputError(f"{label}: a union ControlNet needs a control type for its image (control_type / "
                             f"--control-type); valid: {', '.join(control_type_names(self.controlnet.config.num_control_type))}")
        n = self.controlnet.config.num_control_type
        if self.control_type is not None:
            self.control_type = control_type_index(self.control_type, n, f"{label}: control type")
        self.conditions = [UnionCondition(control_type_index(c.control_type, n, f"{label}: control type"), c.image,
                                          checks.number(f"{label}: condition scale", c.scale, lo=0.0)) for c in conditions]
        if any(c.image is None for c in self.union_conditions):
            raise InputError(f"{label}: a union condition without an image; give one image per control type")

    @property
    def union_conditions(self) -> list[UnionCondition]:
        """A union unit's conditions in pass order: (control_type, image, 1) first, then `conditions`."""
        first = [] if self.control_type is None else [UnionCondition(self.control_type, self.image)]
        return first + list(self.conditions)

    @property
    def residual_weight(self) -> float:
        """What multiplies the residuals: the weight, times the scale of a union's single condition."""
        conditions = self.union_conditions
        return self.weight * conditions[0].scale if len(conditions) == 1 else self.weight

    @property
    def off(self) -> bool:
        """A unit that can never change the result (its ControlNet is never run)."""
        return self.end == 0.0 or self.weight == 0.0 or always_zero(self.schedule)

    def factor_at(self, fraction: float) -> float:
        """The schedule's factor on the weight at `fraction` of the steps (1.0 without a schedule)."""
        return factor_at(self.schedule, fraction, self.schedule_interpolation)


def _condition(item, label: str) -> UnionCondition:
    if isinstance(item, (list, tuple)) and len(item) in (2, 3):
        return UnionCondition(*item)
    raise InputError(f"{label}: a union condition is (control_type, image) or (control_type, image, scale), got {item!r:.60}")
