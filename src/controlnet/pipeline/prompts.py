"""Prompt syntax -> compel's parsed prompt: the A1111 web UI's and compel's own.

compel (which weights and encodes the prompt) parses `word++`, `word-`, `(words)1.3`, `.blend()`,
`.and()`, but not the A1111 syntax most prompts are written in: `(words:1.3)`, `(words)` = x1.1,
`[words]` = /1.1, `\\(` for a literal bracket, `BREAK` to start a new 77-token chunk. A prompt
that uses compel's own operators is read by compel; any other is read as A1111 syntax here and
handed to compel as its parsed form (a `Conjunction` of `(text, weight)` fragments).
"""

from __future__ import annotations

import math
import re

from controlnet import checks
from controlnet.errors import InputError

# compel-only: a weight or +/- right after `)`, `word+`/`word-` before a space or the end, .and()/.blend()/.swap()
COMPEL_ONLY = re.compile(r"\)(?:[+-]|\d|\.\d)|[^\s\\()\[\]][+-]+(?=[\s,;:)]|$)|\.(?:and|blend|swap)\(|withLora\(")
A1111_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\[|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:|\\")
BREAK = re.compile(r"\s*\bBREAK\b\s*")
EMPHASIS = 1.1  # A1111: each ( ) multiplies by 1.1, each [ ] divides by it
MAX_NESTING = 32  # brackets deeper than this weigh > 1.1**32 ≈ 21 (or < 1/21): beyond any useful weight
MAX_COMPEL_NESTING = 4  # compel's parser takes exponential time in the nesting: ~1 s at 4, minutes at 7


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


def _check(conjunction, prompt: str, name: str = "prompt"):
    """compel parses these but cannot honour them here: say so rather than silently drop them; weights
    that are not finite or too large would end in an all-black picture."""
    from compel.prompt_parser import Blend, CrossAttentionControlSubstitute

    where = f"{name} {prompt!r:.80}"
    if conjunction.lora_weights:
        raise InputError(f"{where}: withLora() is not supported here; remove it (load LoRAs into the base model instead)")
    flat = [f for p in conjunction.prompts for q in (p.prompts if isinstance(p, Blend) else [p]) for f in q.children]
    if any(isinstance(f, CrossAttentionControlSubstitute) for f in flat):
        raise InputError(f"{where}: .swap() (cross-attention control) is not supported; write the prompt you want")
    negative = [f for f in flat if getattr(f, "weight", 1.0) < 0]
    if negative:
        raise InputError(f"{where}: the weight of {negative[0].text!r} is negative ({negative[0].weight:g}); "
                         "use a weight between 0 and 1 to weaken a word")
    for f in flat:
        _weight_ok(getattr(f, "weight", 1.0), f"{where}: the weight of {getattr(f, 'text', '')!r:.40}")
    for w in conjunction.weights or []:
        _weight_ok(w, f"{where}: an .and() weight")
    for blend in (p for p in conjunction.prompts if isinstance(p, Blend)):
        for w in blend.weights:
            _weight_ok(w, f"{where}: a .blend() weight")
        if blend.normalize_weights and sum(blend.weights) <= 0:
            raise InputError(f"{where}: the .blend() weights {list(blend.weights)} add up to 0, so nothing is blended; "
                             "give at least one positive weight")
    return conjunction


def _weight_ok(w, what: str) -> None:
    if not (isinstance(w, (int, float)) and math.isfinite(w) and 0 <= w <= checks.MAX_WEIGHT):
        raise InputError(f"{what} is {w:g}; prompt weights must be between 0 and {checks.MAX_WEIGHT:g} (deep brackets "
                         f"multiply by {EMPHASIS} each)")


def _nesting(prompt: str) -> int:
    """The deepest bracket nesting ((, [), escaped brackets not counted."""
    depth = deepest = 0
    for m in re.finditer(r"\\.|[()\[\]]", prompt):
        token = m.group(0)
        depth = depth + 1 if token in "([" else max(0, depth - 1) if token in ")]" else depth
        deepest = max(deepest, depth)
    return deepest


def _check_nesting(prompt: str, compel: bool, name: str) -> None:
    depth, limit = _nesting(prompt), MAX_COMPEL_NESTING if compel else MAX_NESTING
    if depth <= limit:
        return
    if compel:
        raise InputError(f"{name} uses compel syntax (word+, (words)1.2, .blend()) and nests brackets {depth} deep; compel "
                         f"reads at most {limit} levels in reasonable time: flatten it, e.g. (words)1.5 or (words:1.5)")
    raise InputError(f"{name} nests brackets {depth} deep; at most {limit} (each ( ) multiplies the weight by "
                     f"{EMPHASIS}); write (words:1.5) instead")


def check_prompt(prompt, name: str = "prompt") -> str:
    """The prompt as given, refused (naming `name`) when it cannot be encoded: not text, nested too
    deeply, or with weights out of range. The pipeline runs it before any sampling."""
    prompt = checks.text(name, prompt)
    parse_prompt(prompt, name=name)
    return prompt


def parse_prompt(prompt: str, force: bool = False, name: str = "prompt"):
    """compel's `Conjunction` for a prompt with syntax; None for plain text (unless `force`), so that
    plain prompts keep today's exact encoding."""
    from compel import Compel
    from compel.prompt_parser import Conjunction, FlattenedPrompt, PromptParser

    compel = bool(COMPEL_ONLY.search(prompt))
    _check_nesting(prompt, compel, name)
    if compel:
        try:
            parsed = Compel.parse_prompt_string(prompt)
        except RecursionError:
            raise InputError(f"{name} {prompt!r:.80}: too deeply nested for compel's parser; simplify it") from None
        except PromptParser.ParsingException as exc:
            raise InputError(f"{name} {prompt!r:.80}: compel cannot parse it ({exc})") from None
        return _check(parsed, prompt, name)
    parts = [a1111_fragments(part) for part in BREAK.split(prompt)]
    if not force and parts == [[(prompt, 1.0)]]:
        return None
    return _check(Conjunction([FlattenedPrompt(p) for p in parts]), prompt, name)
