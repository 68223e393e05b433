"""Lazy package exports (PEP 562): a name is imported from its module on first use, so that
`controlnet --help` and light commands do not pay for torch, diffusers and transformers."""

from __future__ import annotations

from importlib import import_module


def lazy_exports(package_globals: dict, names: dict[str, str]):
    """(__getattr__, __dir__) for a package exporting `names` (name -> defining module)."""

    def __getattr__(name: str):
        if name in names:
            value = getattr(import_module(names[name]), name)
            package_globals[name] = value
            return value
        raise AttributeError(f"module {package_globals['__name__']!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(package_globals.get("__all__", ())) | set(names))

    return __getattr__, __dir__
