"""Strength schedules: a unit's weight varied over the sampling steps by (fraction, factor) keyframes.

The rule, as ComfyUI-Advanced-ControlNet's timestep keyframes: a keyframe `(f, s)` multiplies the
unit's weight by `s` from the first step whose fraction is >= f; "hold" keeps `s` until the next
keyframe, "linear" ramps straight to it. A schedule that starts after 0 is preceded by an implicit
`(0, 1)`. Step i of N has fraction i/N, the start of its span, the same point a unit's `start` is
compared with (`controlnet.pipeline.modes.active`); img2img counts the steps it runs.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from controlnet import checks
from controlnet.errors import InputError

INTERPOLATIONS = ("hold", "linear")
Keyframes = tuple[tuple[float, float], ...]


def parse_schedule(text: str, label: str = "schedule") -> list[tuple[float, float]]:
    """`"0:1,0.5:0.3"` -> [(0.0, 1.0), (0.5, 0.3)] (the command line's form); values are checked by
    `check_schedule`, this only reads the text."""
    pairs = []
    for item in str(text).split(","):
        parts = item.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            pairs.append((float(parts[0]), float(parts[1])))
        except ValueError:
            raise InputError(f"{label} {text!r}: {item.strip()!r} is not FRACTION:FACTOR; write keyframes as "
                             "0:1,0.5:0.3 (comma-separated, fractions of the steps in [0, 1] with their factors)") from None
    return pairs


def check_schedule(schedule, label: str = "schedule") -> Keyframes:
    """Keyframes as a tuple of (fraction, factor) floats; fractions in [0, 1] and strictly increasing,
    factors finite and >= 0. A string is parsed first (`parse_schedule`)."""
    if isinstance(schedule, str):
        schedule = parse_schedule(schedule, label)
    if isinstance(schedule, bytes) or not isinstance(schedule, Sequence) or not schedule:
        raise InputError(f"{label} must be a non-empty list of (fraction, factor) keyframes, e.g. [(0, 1), (0.5, 0.3)]; "
                         f"got {schedule!r:.80} (leave it out, None, for a constant weight)")
    frames = []
    for k, frame in enumerate(schedule):
        frames.append(_keyframe(frame, f"{label}[{k}]"))
    for (a, _), (b, _) in zip(frames, frames[1:]):
        if b <= a:
            raise InputError(f"{label}: fractions must increase, but {b} follows {a}; sort the keyframes and give "
                             "each fraction once")
    return tuple(frames)


def _keyframe(frame, label: str) -> tuple[float, float]:
    if isinstance(frame, (str, bytes)) or not isinstance(frame, Sequence) or len(frame) != 2:
        raise InputError(f"{label} must be a (fraction, factor) pair, got {frame!r:.60}")
    try:
        fraction, factor = float(frame[0]), float(frame[1])
    except (TypeError, ValueError):
        raise InputError(f"{label} must hold two numbers (fraction, factor), got {frame!r:.60}") from None
    if not 0.0 <= fraction <= 1.0:
        raise InputError(f"{label}: the fraction {fraction} is outside [0, 1]; give a fraction of the sampling steps")
    if not (math.isfinite(factor) and 0 <= factor <= checks.MAX_WEIGHT):
        raise InputError(f"{label}: the factor {factor:g} must be a finite number >= 0 and at most {checks.MAX_WEIGHT:g} "
                         "(0 switches the unit off)")
    return fraction, factor


def format_schedule(schedule: Keyframes) -> str:
    """Checked keyframes -> the command line's text ("0.0:1.0,0.5:0.3"), exact (Python's shortest repr)."""
    return ",".join(f"{f!r}:{s!r}" for f, s in schedule)


def check_interpolation(value, label: str = "schedule interpolation") -> str:
    """'hold' (step changes, the default) or 'linear'."""
    if not isinstance(value, str) or value.strip().lower() not in INTERPOLATIONS:
        raise InputError(f"{label} must be one of {', '.join(INTERPOLATIONS)}, got {value!r:.40}")
    return value.strip().lower()


def factor_at(schedule: Keyframes | None, fraction: float, interpolation: str = "hold") -> float:
    """The schedule's factor at `fraction` of the steps (1.0 without a schedule)."""
    if schedule is None:
        return 1.0
    if schedule[0][0] > 0.0:
        schedule = ((0.0, 1.0), *schedule)
    k = bisect_right([f for f, _ in schedule], fraction) - 1
    f0, s0 = schedule[k]
    if interpolation == "hold" or k + 1 == len(schedule):
        return s0
    f1, s1 = schedule[k + 1]
    return s0 + (s1 - s0) * (fraction - f0) / (f1 - f0)


def always_zero(schedule: Keyframes | None) -> bool:
    """A schedule whose factor is 0 at every step: the unit can never act."""
    return schedule is not None and schedule[0][0] == 0.0 and all(s == 0.0 for _, s in schedule)
