"""Approximate sampling: training-free ways to skip work, each off by default (issue 23 §2).

- `control_reuse=k`: a ControlNet runs at every k-th step (from `control_reuse_from` of the steps
  on; every step before) and the steps between reuse its residuals, rescaled by that step's weight
  schedule. Control changes slowly once the layout is set, which late steps only refine.
- `control_cond_only`: under classifier-free guidance a balanced unit's ControlNet runs on the
  conditional half of the batch only, and its residuals serve both halves (the unconditional
  residuals differ from them only through the prompt's cross-attention). Half the ControlNet's work.
- `deepcache=n`: DeepCache (Ma et al. 2023) with ControlNets: every n-th step runs the whole
  U-Net and keeps what enters its last up block; the steps between run only the shallowest level
  (conv_in, the first down block, the last up block) on those kept deep features, and each
  ControlNet only as deep as the residuals that level takes (`controlnet.nn.deep_cache`).

`Approximation()` (all identities: k = 1, off, n = 1) is the exact sampler, bit for bit. Measured
costs and speed-ups on the built-in world: docs/performance.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from controlnet import checks
from controlnet.errors import InputError
from controlnet.nn.residuals import ControlResiduals


@dataclass(frozen=True)
class Approximation:
    """Which approximate modes a call uses; each value is checked here, naming the field."""

    control_reuse: int = 1
    control_reuse_from: float = 0.0
    control_cond_only: bool = False
    deepcache: int = 1

    def __post_init__(self):
        object.__setattr__(self, "control_reuse", _period("control_reuse", self.control_reuse))
        object.__setattr__(self, "deepcache", _period("deepcache", self.deepcache))
        object.__setattr__(self, "control_reuse_from", checks.number(
            "control_reuse_from (a fraction of the steps)", self.control_reuse_from, lo=0.0, hi=1.0, hi_open=True))
        if not isinstance(self.control_cond_only, bool):
            raise InputError(f"control_cond_only must be true or false, got {self.control_cond_only!r:.40}")

    @property
    def exact(self) -> bool:
        return self.control_reuse == 1 and not self.control_cond_only and self.deepcache == 1

    def asked(self) -> dict:
        """The fields that differ from exact sampling (what a cache key or a PNG records)."""
        return {k: v for k, v in asdict(self).items() if v != getattr(EXACT, k)}


def _period(name: str, value) -> int:
    """A whole number of steps >= 1 (1: every step, the exact sampler)."""
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise InputError(f"{name} must be a whole number of steps >= 1 (1 = exact), got {value!r:.40}")
    if value < 1:
        raise InputError(f"{name} must be a whole number of steps >= 1 (1 = exact), got {value!r:.40}")
    return int(value)


def refreshes(step: int, num_steps: int, every: int, start: float = 0.0) -> bool:
    """Whether the cached work is done afresh at `step` of `num_steps`: at every step before
    `start`·N, then at every `every`-th step counting from the first step at or after it."""
    first = math.ceil(start * num_steps - 1e-9)
    return every == 1 or step < first or (step - first) % every == 0


@dataclass
class ResidualCache:
    """Each unit's raw ControlNet residuals from the last step its ControlNet ran (control_reuse).
    `forwards` counts the ControlNet calls actually made."""

    every: int
    start: float
    num_steps: int
    kept: dict = field(default_factory=dict)
    forwards: int = 0

    def residuals(self, key, step: int, run: Callable[[], ControlResiduals]) -> ControlResiduals:
        if self.every > 1 and key in self.kept and not refreshes(step, self.num_steps, self.every, self.start):
            return self.kept[key]
        self.forwards += 1
        res = run()
        if self.every > 1:
            self.kept[key] = res
        return res


@dataclass
class DeepFeatures:
    """DeepCache's state: the deep features kept at the last full step (`controlnet.nn.deep_cache`)."""

    every: int
    num_steps: int
    kept: dict = field(default_factory=dict)
    shallow_runs: int = 0

    def shallow(self, step: int) -> bool:
        """Whether `step` runs only the shallow level: deep features are kept and it is not a full step."""
        return self.every > 1 and "deep" in self.kept and not refreshes(step, self.num_steps, self.every)

    def store(self) -> dict | None:
        """Where a full step keeps its deep features (None when DeepCache is off: nothing is kept)."""
        return self.kept if self.every > 1 else None


EXACT = Approximation()


def approximation(value) -> Approximation:
    """None (exact), an `Approximation`, or a dict of its fields."""
    if value is None:
        return Approximation()
    if isinstance(value, Approximation):
        return value
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(Approximation.__dataclass_fields__))
        if unknown:
            raise InputError(f"approx: unknown field {unknown[0]!r}; known: {', '.join(Approximation.__dataclass_fields__)}")
        return Approximation(**value)
    raise InputError(f"approx must be an Approximation, a dict of its fields or None, got {type(value).__name__}")
