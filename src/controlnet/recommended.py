"""A ControlNet's recommended sampling settings, stored with it: `recommended.json` in its folder.

The built-in miniature ControlNets carry the settings a measured sweep chose (docs/mini.md);
`controlnet demo`, `controlnet generate` and `controlnet evaluate` use them for every value the
user does not give. Any ControlNet folder may carry such a file. This is its one reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError

FILE = "recommended.json"
KEYS = ("guidance_scale", "weight", "steps", "mode", "scheduler")
NOTES = ("note", "measured")  # free text for readers, ignored


def read(controlnet: str | os.PathLike) -> dict:
    """The recommended settings of the ControlNet at `controlnet` ({} without a file: a single
    checkpoint file, or a folder without recommendations). A damaged file is an InputError."""
    file = Path(controlnet) / FILE
    if not file.is_file():
        return {}
    try:
        stored = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _damaged(file, f"not readable JSON: {exc}") from None
    if not isinstance(stored, dict):
        raise _damaged(file, f"a JSON {type(stored).__name__}, not an object")
    unknown = sorted(set(stored) - set(KEYS) - set(NOTES))
    if unknown:
        raise _damaged(file, f"unknown key {unknown[0]!r}; known: {', '.join(KEYS)}")
    try:
        return {key: _check(key, stored[key]) for key in KEYS if key in stored}
    except InputError as exc:
        raise _damaged(file, str(exc)) from None


def agreed(controlnets, key: str, default):
    """`key`'s value recommended by the ControlNets that recommend one, when they agree; else `default`
    (a setting shared by every ControlNet of a run, such as the guidance scale, cannot follow two)."""
    values = {read(c)[key] for c in controlnets if key in read(c)}
    return values.pop() if len(values) == 1 else default


def choose(key: str, given, controlnets, default) -> tuple:
    """The one rule every front end follows (`generate`, `demo`, the server's page and API): a value
    the user gave wins; else the ControlNets' recommended one when they agree (one ControlNet: its
    own); else `default`. -> (value, True when it came from a recommendation)."""
    if given is not None:
        return given, False
    value = agreed(controlnets, key, None)
    return (default, False) if value is None else (value, True)


def _check(key: str, value):
    from controlnet.pipeline.modes import mode_name

    if key == "guidance_scale":
        return checks.number("guidance_scale", value, lo=0.0, hi=100.0)
    if key == "weight":
        return checks.number("weight", value, lo=0.0, hi=10.0)
    if key == "steps":
        return checks.integer("steps", value, lo=1, hi=1000)
    if key == "scheduler":
        from controlnet.pipeline.schedulers import scheduler_names

        return checks.choice("scheduler", value, scheduler_names())
    try:
        return mode_name(value)
    except ValueError as exc:
        raise InputError(f"mode: {exc}") from None


def _damaged(file: Path, why: str) -> InputError:
    return InputError(f"{file}: damaged recommended settings ({why}); fix the file, or delete it to use the "
                      "commands' own defaults")
