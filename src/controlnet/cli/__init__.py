"""The `controlnet` command: one sub-command per module in this package.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments. Adding a command = adding a module here
and its name to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import traceback

from controlnet.errors import ControlNetError
from controlnet.files import NO_SPACE

DEBUG_ENV = "CONTROLNET_DEBUG"

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
    "serve",
    "evaluate",
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
    parser.add_argument("--debug", action="store_true",
                        help=f"show Python tracebacks of errors (or set {DEBUG_ENV}=1)")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = parser.parse_args([a for a in argv if a != "--debug"])  # --debug works anywhere on the line
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if debug:
        return int(args.func(args) or 0)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"controlnet {args.command}: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # noqa: BLE001 - the one place errors become messages
        if isinstance(exc, SystemExit):
            raise
        message, code = describe_error(exc)
        print(f"controlnet {args.command}: error: {message}", file=sys.stderr)
        return code


def quiet_libraries() -> None:
    """Library warnings and weight-loading bars are noise on a command line; errors still show."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def describe_error(exc: BaseException) -> tuple[str, int]:
    """(one line for the user, exit code): 2 for a user error, 1 for a failure while running."""
    if isinstance(exc, ControlNetError):
        return str(exc), 2
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        what = exc.strerror or str(exc)
        if exc.errno in NO_SPACE:
            return f"{where}{what} (the disk is full or the file is too large; free space or write elsewhere)", 1
        user = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
        return f"{where}{what}", 2 if isinstance(exc, user) else 1
    if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("controlnet"):
        return missing_package(exc.name), 2
    if isinstance(exc, MemoryError):
        return "out of memory (try a smaller size, batch or model)", 1
    report = _write_crash_report()
    return (f"internal error (a bug in controlnet): {type(exc).__name__}: {exc}; the full traceback is in "
            f"{report}; rerun with --debug to see it here"), 1


# optional packages -> the extra that installs them (pyproject.toml)
EXTRAS = {"fastapi": "serve", "uvicorn": "serve", "starlette": "serve", "datasets": "train",
          "webdataset": "train", "tensorboard": "train", "mediapipe": "pose", "bitsandbytes": "bnb"}


def missing_package(name: str) -> str:
    top = name.split(".")[0]
    extra = EXTRAS.get(top)
    how = f"pip install 'controlnet-pytorch[{extra}]'" if extra else f"pip install {top}"
    return f"this needs the Python package {top!r}, which is not installed: {how}"


def _write_crash_report() -> str:
    fd, path = tempfile.mkstemp(prefix="controlnet-crash-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(f"controlnet {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}")
    return path


if __name__ == "__main__":
    sys.exit(main())
