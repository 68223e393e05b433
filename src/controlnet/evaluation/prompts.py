"""The prompt settings of the paper's §4.2, made exactly from what the world knows of a scene.

- none: the empty prompt;
- insufficient: the shapes' kinds without their colours ("a circle and a star on a background"):
  true, but not enough to draw the picture;
- conflicting: every shape kind and colour, and the background, replaced by another one: the text
  says something else than the condition;
- perfect: the scene's caption.
User data has its caption only: `none` and `caption` (= perfect).
"""

from __future__ import annotations

from controlnet import checks
from controlnet.errors import InputError

WORLD_SETTINGS = ("none", "insufficient", "conflicting", "perfect")
DATA_SETTINGS = ("none", "caption")


def check_settings(settings, world: bool) -> tuple[str, ...]:
    """Validated setting names, in order, without repeats ('all' = every setting of the data)."""
    allowed = WORLD_SETTINGS if world else DATA_SETTINGS
    names = [settings] if isinstance(settings, str) else list(settings or [])
    names = [s.strip() for n in names for s in str(n).split(",") if s.strip()]
    if names == ["all"]:
        return allowed
    if not names:
        raise InputError(f"--prompts: give at least one of {', '.join(allowed)} (or all)")
    if world:
        names = ["perfect" if n == "caption" else n for n in names]
    elif "perfect" in names:
        raise InputError("--prompts perfect needs the world's scenes; for a dataset use caption")
    for n in names:
        checks.choice("prompt setting (--prompts)", n, (*allowed, "all"))
    if "all" in names:
        raise InputError("--prompts all stands alone; do not list it with other settings")
    return tuple(dict.fromkeys(names))


def world_prompt(setting: str, scene) -> str:
    from controlnet.world.caption import caption

    if setting == "none":
        return ""
    if setting == "perfect":
        return caption(scene)
    if setting == "insufficient":
        things = [f"a {s.kind}" for s in scene.shapes]
        listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
        return f"{listed} on a background"
    return caption(conflicting_scene(scene))


def conflicting_scene(scene):
    """The scene with every kind, colour and the background moved to another value (fixed shifts)."""
    from dataclasses import replace

    from controlnet.world.palette import COLOUR_NAMES, SHAPE_KINDS

    def other(seq, v, k):
        return seq[(seq.index(v) + k) % len(seq)]

    shapes = tuple(replace(s, kind=other(SHAPE_KINDS, s.kind, 2), colour=other(COLOUR_NAMES, s.colour, 5))
                   for s in scene.shapes)
    return replace(scene, shapes=shapes, background=other(COLOUR_NAMES, scene.background, 5))


def data_prompt(setting: str, caption: str) -> str:
    return "" if setting == "none" else caption
