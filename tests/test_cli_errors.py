"""The command line's one error handler: user errors are one line (exit 2), failures while running
exit 1, bugs say so and leave a crash report; --debug shows the traceback."""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from bad_input_tools import assert_user_error, run_cli
from controlnet.cli import inspect as inspect_cli
from controlnet.errors import CheckpointError, InputError


def _raising(exc: BaseException):
    def run(args):
        raise exc
    return run


@pytest.mark.parametrize(
    "exc, fragments, code",
    [
        (InputError("steps must be a positive integer, got 0"), ["steps", "got 0"], 2),
        (CheckpointError("x.safetensors: truncated"), ["x.safetensors", "truncated"], 2),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/no/such.png"), ["/no/such.png", "no such file"], 2),
        (PermissionError(errno.EACCES, "Permission denied", "/root/locked"), ["/root/locked", "permission denied"], 2),
        (IsADirectoryError(errno.EISDIR, "Is a directory", "/tmp"), ["/tmp", "is a directory"], 2),
        (OSError(errno.ENOSPC, "No space left on device", "/full/out.png"), ["/full/out.png", "disk is full"], 1),
        (OSError(errno.EFBIG, "File too large", "/big/out.png"), ["/big/out.png", "too large"], 1),
        (MemoryError(), ["out of memory"], 1),
    ],
)
def test_errors_become_one_line(monkeypatch, capsys, exc, fragments, code):
    monkeypatch.setattr(inspect_cli, "run", _raising(exc))
    err = assert_user_error(["inspect", "whatever"], capsys, *fragments, code=code)
    assert err.startswith("controlnet inspect: error: ")
    assert err.count("\n") == 1


def test_a_bug_says_so_and_leaves_a_crash_report(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(inspect_cli, "run", _raising(ZeroDivisionError("division by zero")))
    code, _, err = run_cli(["inspect", "x"], capsys)
    assert code == 1
    assert "internal error" in err and "ZeroDivisionError" in err and "Traceback" not in err
    report = Path(re.search(r"traceback is in (\S+?);", err).group(1))
    assert report.parent == tmp_path
    text = report.read_text()
    assert "Traceback" in text and "ZeroDivisionError: division by zero" in text


def test_the_crash_report_survives_an_argv_that_is_not_utf8(monkeypatch, capsys, tmp_path):
    """It failed with UnicodeEncodeError writing argv and left an empty file (issue 19)."""
    import sys
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(sys, "argv", ["controlnet", "inspect", "caf\udce9.safetensors"])
    monkeypatch.setattr(inspect_cli, "run", _raising(ZeroDivisionError("division by zero")))
    code, _, err = run_cli(["inspect", "x"], capsys)
    assert code == 1 and "Traceback" not in err
    report = Path(re.search(r"traceback is in (\S+?);", err).group(1))
    text = report.read_text(encoding="utf-8")
    assert "caf\\udce9.safetensors" in text and "ZeroDivisionError: division by zero" in text
    assert [p.name for p in tmp_path.iterdir()] == [report.name]  # no temporary file left


def test_a_crash_report_that_cannot_be_written_is_said(monkeypatch, capsys, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no_such_folder"))
    monkeypatch.setattr(inspect_cli, "run", _raising(ZeroDivisionError("division by zero")))
    code, _, err = run_cli(["inspect", "x"], capsys)
    assert code == 1 and "Traceback" not in err and "ZeroDivisionError" in err
    assert "crash report could not be written" in err


@pytest.mark.parametrize("how", ["flag-after", "flag-before", "env"])
def test_debug_shows_the_traceback(monkeypatch, capsys, how):
    from controlnet.cli import main

    monkeypatch.setattr(inspect_cli, "run", _raising(InputError("bad thing")))
    argv = {"flag-after": ["inspect", "x", "--debug"], "flag-before": ["--debug", "inspect", "x"],
            "env": ["inspect", "x"]}[how]
    if how == "env":
        monkeypatch.setenv("CONTROLNET_DEBUG", "1")
    with pytest.raises(InputError, match="bad thing"):
        main(argv)


def test_interrupt_exits_130(monkeypatch, capsys):
    monkeypatch.setattr(inspect_cli, "run", _raising(KeyboardInterrupt()))
    code, _, err = run_cli(["inspect", "x"], capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["no-such-command"], ["generate", "--no-such-flag"], ["inspect"]])
def test_usage_errors_exit_2_without_traceback(capsys, argv):
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert "Traceback" not in err + out
    assert ("usage" in (err + out).lower())


@pytest.mark.parametrize(("module", "extra"), [("uvicorn", "serve"), ("datasets.arrow", "train"), ("somepkg", None)])
def test_a_missing_optional_package_says_how_to_install_it(monkeypatch, capsys, module, extra):
    exc = ModuleNotFoundError(f"No module named '{module}'", name=module)
    monkeypatch.setattr(inspect_cli, "run", _raising(exc))
    hint = f"controlnet-pytorch[{extra}]" if extra else f"pip install {module}"
    assert_user_error(["inspect", "x"], capsys, "not installed", hint)
