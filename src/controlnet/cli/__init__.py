"""The `controlnet` command: one sub-command per module in this package.

Each sub-command module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments. Adding a command = adding a module here
and its name to `COMMANDS`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import tempfile
import traceback

from controlnet.errors import ControlNetError
from controlnet.files import NO_SPACE, atomic_file
from controlnet.memory import keep_freed_memory

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
    undecodable = not_text(argv)
    if undecodable:
        print(f"controlnet {_command_of(argv)}: error: {undecodable}", file=sys.stderr)
        return 2
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    args = parser.parse_args([a for a in argv if a != "--debug"])  # --debug works anywhere on the line
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    keep_freed_memory()  # this process only: big activations reuse freed pages instead of faulting in new ones
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


def not_text(argv: list[str]) -> str:
    """Why an argument is refused ("" when none is): bytes that are not UTF-8 reach Python as lone
    surrogates (surrogateescape), which no prompt, PNG chunk or printed path can hold."""
    for i, arg in enumerate(argv):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError as exc:
            bad = arg[exc.start]
            byte = f"byte 0x{ord(bad) - 0xDC00:02x}" if 0xDC80 <= ord(bad) <= 0xDCFF else f"{bad!r}"
            return (f"{_flag_of(argv, i)} is not UTF-8 text ({byte} at position {exc.start}); give UTF-8 text "
                    f"(a file whose name is not UTF-8: rename it)")
    return ""


def _flag_of(argv: list[str], i: int) -> str:
    """The option an argument belongs to: `--prompt=x` or `--prompt x`, else its position."""
    arg = argv[i]
    if arg.startswith("-") and "=" in arg:
        return f"the value of {arg.split('=', 1)[0]}"
    if arg.startswith("-"):
        return "an option name"
    if i > 0 and argv[i - 1].startswith("-") and "=" not in argv[i - 1]:
        return f"the value of {argv[i - 1]}"
    return f"argument {i + 1}"


def _command_of(argv: list[str]) -> str:
    return next((a for a in argv if not a.startswith("-")), "").encode("utf-8", "backslashreplace").decode()


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
    """The traceback in a fresh file, written whole or not at all; any text (argv with undecodable
    bytes included) is written with escapes rather than failing the report."""
    text = f"controlnet {' '.join(sys.argv[1:])}\n\n{traceback.format_exc()}"
    path = None
    try:
        fd, path = tempfile.mkstemp(prefix="controlnet-crash-", suffix=".txt")  # a name no other run takes
        os.close(fd)
        with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
    except (OSError, ControlNetError) as exc:
        if path:
            with contextlib.suppress(OSError):
                os.remove(path)
        return f"nowhere (the crash report could not be written: {exc})"
    return path


if __name__ == "__main__":
    sys.exit(main())
