"""The `controlnet` command: one sub-command per module in this package.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments. Adding a command = adding a module here
and its name to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from controlnet.errors import ControlNetError

# module names under controlnet.cli, in the order `controlnet --help` lists them
COMMANDS = [
    "demo",
    "inspect",
    "convert",
    "transfer",
    "example",
    "generate",
    "annotate",
    "train",
    "world",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlnet",
        description="ControlNet for Stable Diffusion: inspect/convert checkpoints, generate, annotate, train.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"controlnet.cli.{name}")
        except ModuleNotFoundError as exc:  # an optional extra is not installed
            if exc.name and exc.name.startswith("controlnet"):
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result = args.func(args)
    except ControlNetError as exc:
        print(f"controlnet {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"controlnet {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
