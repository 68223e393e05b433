"""Captions: the scene in words, shapes named in draw order, then the background."""

from __future__ import annotations

from controlnet.world.scene import Scene


def caption(scene: Scene) -> str:
    """E.g. "a red circle, a blue square and a green star on a striped yellow background"."""
    things = [f"{_article(s.colour)} {s.colour} {s.kind}" for s in scene.shapes]
    listed = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    texture = "" if scene.texture == "plain" else f"{scene.texture} "
    return f"{listed} on {_article(texture or scene.background)} {texture}{scene.background} background"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def vocabulary() -> list[str]:
    """Every word a caption can contain (the mini text encoder gives each its own token)."""
    from controlnet.world.palette import COLOUR_NAMES, SHAPE_KINDS, TEXTURES

    return ["a", "an", "and", "on", "background", ",", *COLOUR_NAMES, *SHAPE_KINDS, *TEXTURES[1:]]
