"""Checks of user-given values, done once where a value enters the API; the CLI shows the message.

Each returns the value normalised (a float, an int) or raises `InputError` naming the parameter,
the value and the allowed range.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

# The largest multiplier a user may give: a control weight, a strength-schedule factor, a per-connection
# scale, a prompt weight (ComfyUI's ControlNet strength slider ends at 10). Larger ones only overflow
# to an all-black picture, in fp16 long before 1e30.
MAX_WEIGHT = 10.0
MAX_GUIDANCE = 100.0  # the CFG scale (ComfyUI's and this server's limit; A1111's slider ends at 30)


def number(name: str, value, *, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number in [lo, hi] (an open end excludes the bound)."""
    from controlnet.errors import InputError

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:
            value = float(value) if isinstance(value, str) else value
        except ValueError:
            pass
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InputError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}")
    below = lo is not None and (value <= lo if lo_open else value < lo)
    above = hi is not None and (value >= hi if hi_open else value > hi)
    if below or above:
        raise InputError(f"{name} must be in {_range(lo, hi, lo_open, hi_open)}, got {value:g}")
    return value


def integer(name: str, value, *, lo: int | None = None, hi: int | None = None) -> int:
    """A whole number in [lo, hi] (numpy integers accepted, floats and bools refused)."""
    from controlnet.errors import InputError

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InputError(f"{name} must be in {_range(lo, hi, False, False)}, got {value}")
    return value


def weight(name: str, value, *, lo: float = 0.0) -> float:
    """A multiplier in [lo, MAX_WEIGHT]."""
    return number(name, value, lo=lo, hi=MAX_WEIGHT)


def text(name: str, value) -> str:
    """A string every encoder can take: lone surrogates (undecodable bytes of a command line, or a
    JSON "\\ud800") are refused here rather than failing in a tokenizer or a PNG chunk."""
    from controlnet.errors import InputError

    if not isinstance(value, str):
        raise InputError(f"{name} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(f"{name} is not valid text: {value[exc.start]!r} at position {exc.start} is a lone "
                         "surrogate (bytes that are not UTF-8); give UTF-8 text") from None
    return value


def digits(text: str) -> int | None:
    """The number a name spells in ASCII digits ("0007" -> 7), else None: str.isdigit() also accepts
    "²" and "①", which int() refuses."""
    return int(text) if text.isascii() and text.isdigit() else None


def positive_int(name: str, value) -> int:
    return integer(name, value, lo=1)


def path(name: str, value) -> Path:
    """A file-system path; an empty name is refused (Path("") would quietly mean the current folder)."""
    from controlnet.errors import InputError

    if value is None or not str(os.fspath(value)).strip():
        raise InputError(f"the {name} path is an empty string; give a file or folder name")
    return Path(value)


def choice(name: str, value, options) -> str:
    from controlnet.errors import InputError

    if value not in options:
        raise InputError(f"unknown {name} {value!r}; use one of {', '.join(map(str, options))}")
    return value


def _range(lo, hi, lo_open, hi_open) -> str:
    lo, hi = (_plain(v) for v in (lo, hi))
    if hi is None:
        return f"{'(' if lo_open else '['}{lo}, ∞)" if lo is not None else "(-∞, ∞)"
    if lo is None:
        return f"(-∞, {hi}{')' if hi_open else ']'}"
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _plain(v) -> str | None:
    """Whole bounds as integers (seed ≤ 4294967295, not 4.29497e+09); others as %g."""
    if v is None:
        return None
    return str(int(v)) if float(v).is_integer() else f"{v:g}"
