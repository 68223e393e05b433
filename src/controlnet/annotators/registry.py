"""The annotator registry: name -> function, parameters with defaults, and the checkpoints it feeds.

Each annotator module registers its functions with `@register(...)`; `annotate()` looks them up,
checks and converts the parameters (so CLI strings and Python values go through one path), and
knows how to resize each map from its `kind`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlnet import checks
from controlnet.errors import ControlNetError, InputError

# how a map may be resized: label (palette / pose, nearest), edge (1-px lines, nearest),
# binary (black/white strokes, smooth + re-threshold), image (continuous, area/cubic)
MAP_KINDS = ("label", "edge", "binary", "image")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Param:
    """One tunable of an annotator. `type` is int, float, bool, str, "path" or "image"."""

    name: str
    default: Any
    help: str
    type: Any = None  # inferred from the default when None
    choices: tuple = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False  # no usable default: the user must give it (local model paths)

    @property
    def kind(self):
        if self.type is not None:
            return self.type
        return type(self.default) if self.default is not None else str

    def convert(self, value, annotator: str):
        """Check and convert one value; strings from the command line are parsed here, numbers
        are checked finite and in range (`controlnet.checks`), so NaN and inf never reach OpenCV."""
        where = f"annotator {annotator!r} parameter {self.name!r}"
        if value is None:
            if self.default is None:
                return None
            raise InputError(f"{where} cannot be empty")
        value = self._parse(value, where)
        if self.choices and value not in self.choices:
            raise InputError(f"{where} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        if self.kind is float:
            return checks.number(where, value, lo=self.minimum, hi=self.maximum)
        if self.kind is int:
            return checks.integer(where, value, lo=self.minimum, hi=self.maximum)
        return value

    def _parse(self, value, where: str):
        """The value as this parameter's type (bool/int/float/str/path/image), or an InputError."""
        kind = self.kind
        try:
            if kind is bool:
                if isinstance(value, str):
                    if value.strip().lower() not in _TRUE | _FALSE:
                        raise ValueError(value)
                    return value.strip().lower() in _TRUE
                return bool(value)
            if kind is int:
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(value)
                return int(value)
            if kind is float:
                return float(value)
            if kind in (str, "path"):
                return str(value)
        except (TypeError, ValueError, OverflowError):
            name = kind if isinstance(kind, str) else kind.__name__
            raise InputError(f"{where} expects a {name}, got {value!r}") from None
        if kind == "image" and isinstance(value, (str, os.PathLike)):
            from .image import to_rgb

            try:
                return to_rgb(value)
            except ControlNetError as exc:
                raise type(exc)(f"{where}: {exc}") from None
        return value


@dataclass(frozen=True)
class Annotator:
    """A registered annotator. `fn(image, **params)` gets RGB uint8 at the detect resolution."""

    name: str
    fn: Callable[..., Any]
    feeds: str  # which published checkpoints read this map
    summary: str
    kind: str  # resize behaviour, one of MAP_KINDS
    params: tuple[Param, ...] = ()
    uses_resolution: bool = True  # False: runs on the full input (tile, inpaint)
    learned: bool = False
    needs: str = ""  # what must be installed or provided locally, for the listing
    aliases: tuple[str, ...] = field(default=())
    requires: Callable[[], Any] | None = None  # raises InputError (what to install) when it cannot run here
    weights: tuple[str, ...] = ()  # published files / folders it reads from the models folder; the first fills `model`

    def unavailable(self) -> str | None:
        """Why this annotator cannot run in this install (a missing optional package), or None."""
        if self.requires is None:
            return None
        try:
            self.requires()
        except InputError as exc:
            return str(exc)
        return None

    def threshold_params(self) -> list[Param]:
        """The parameters A1111's threshold_a and threshold_b set: the first two numeric ones."""
        return [p for p in self.params if p.kind in (int, float)][:2]

    def bind(self, given: dict[str, Any]) -> dict[str, Any]:
        """All parameter values: defaults overridden by `given`, unknown names rejected."""
        known = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(known))
        if unknown:
            valid = ", ".join(known) or "none"
            raise InputError(f"annotator {self.name!r} has no parameter {', '.join(unknown)}; valid: {valid}")
        values = {}
        for p in self.params:
            if p.required and given.get(p.name) is None:
                raise InputError(
                    f"annotator {self.name!r} needs parameter {p.name!r}: {p.help} "
                    f"(Python: {p.name}=...; CLI: --param {p.name}=...)"
                )
            values[p.name] = p.convert(given[p.name], self.name) if p.name in given else p.default
        return values


REGISTRY: dict[str, Annotator] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, *, feeds: str, summary: str, kind: str, params=(), **options):
    """Decorator adding a function to the registry under `name`."""
    if kind not in MAP_KINDS:
        raise ValueError(f"kind must be one of {MAP_KINDS}")

    def add(fn):
        if name in REGISTRY or name in _ALIASES:
            raise ValueError(f"annotator {name!r} registered twice")
        spec = Annotator(name=name, fn=fn, feeds=feeds, summary=summary, kind=kind, params=tuple(params), **options)
        REGISTRY[name] = spec
        for alias in spec.aliases:
            _ALIASES[alias] = name
        return fn

    return add


def get_annotator(name: str) -> Annotator:
    """Look an annotator up by name or alias; unknown names get the closest suggestions."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key in REGISTRY:
        return REGISTRY[key]
    names = sorted(REGISTRY) + sorted(_ALIASES)
    close = difflib.get_close_matches(key, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise InputError(
        f"unknown annotator {name!r}.{hint} Run `controlnet annotators` to list them "
        f"(available: {', '.join(sorted(REGISTRY))})"
    )


def list_annotators() -> list[Annotator]:
    """Every registered annotator, sorted by name."""
    return [REGISTRY[k] for k in sorted(REGISTRY)]
