"""Prompt syntax -> compel's parsed prompt: the A1111 web UI's and compel's own.

compel (which weights and encodes the prompt) parses `word++`, `word-`, `(words)1.3`, `.blend()`,
`.and()`, but not the A1111 syntax most prompts are written in: `(words:1.3)`, `(words)` = x1.1,
`[words]` = /1.1, `\\(` for a literal bracket, `BREAK` to start a new 77-token chunk. A prompt
that uses compel's own operators is read by compel; any other is read as A1111 syntax here and
handed to compel as its parsed form (a `Conjunction` of `(text, weight)` fragments).
"""

from __future__ import annotations

import re

from controlnet.errors import InputError

# compel-only: a weight or +/- right after `)`, `word+`/`word-` before a space or the end, .and()/.blend()/.swap()
COMPEL_ONLY = re.compile(r"\)(?:[+-]|\d|\.\d)|[^\s\\()\[\]][+-]+(?=[\s,;:)]|$)|\.(?:and|blend|swap)\(|withLora\(")
A1111_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:|\\")
BREAK = re.compile(r"\s*\bBREAK\b\s*")
EMPHASIS = 1.1  # A1111: each ( ) multiplies by 1.1, each [ ] divides by it


def a1111_fragments(text: str) -> list[tuple[str, float]]:
    """(text, weight) pieces of one A1111 prompt (no BREAK), adjacent equal weights merged.
    Unclosed brackets apply to the end and stray closing ones are text, as in the web UI."""
    pieces: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for p in pieces[start:]:
            p[1] *= factor

    for m in A1111_TOKEN.finditer(text):
        token, weight = m.group(0), m.group(1)
        if token.startswith("\\") and len(token) == 2:
            pieces.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(pieces))
        elif token == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            scale(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            scale(round_open.pop(), EMPHASIS)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / EMPHASIS)
        else:
            pieces.append([token, 1.0])
    for start in round_open:
        scale(start, EMPHASIS)
    for start in square_open:
        scale(start, 1 / EMPHASIS)
    merged: list[list] = []
    for text_, w in pieces:
        if merged and merged[-1][1] == w:
            merged[-1][0] += text_
        else:
            merged.append([text_, w])
    return [(t, w) for t, w in merged if t] or [("", 1.0)]


def _check(conjunction, prompt: str):
    """compel parses these but cannot honour them here: say so rather than silently drop them."""
    from compel.prompt_parser import Blend, CrossAttentionControlSubstitute

    if conjunction.lora_weights:
        raise InputError(f"prompt {prompt!r}: withLora() is not supported here; remove it (load LoRAs into the base model instead)")
    flat = [f for p in conjunction.prompts for q in (p.prompts if isinstance(p, Blend) else [p]) for f in q.children]
    if any(isinstance(f, CrossAttentionControlSubstitute) for f in flat):
        raise InputError(f"prompt {prompt!r}: .swap() (cross-attention control) is not supported; write the prompt you want")
    negative = [f for f in flat if getattr(f, "weight", 1.0) < 0]
    if negative:
        raise InputError(f"prompt {prompt!r}: the weight of {negative[0].text!r} is negative ({negative[0].weight:g}); "
                         "use a weight between 0 and 1 to weaken a word")
    return conjunction


def parse_prompt(prompt: str, force: bool = False):
    """compel's `Conjunction` for a prompt with syntax; None for plain text (unless `force`), so that
    plain prompts keep today's exact encoding."""
    from compel import Compel
    from compel.prompt_parser import Conjunction, FlattenedPrompt

    if COMPEL_ONLY.search(prompt):
        return _check(Compel.parse_prompt_string(prompt), prompt)
    parts = [a1111_fragments(part) for part in BREAK.split(prompt)]
    if not force and parts == [[(prompt, 1.0)]]:
        return None
    return _check(Conjunction([FlattenedPrompt(p) for p in parts]), prompt)
