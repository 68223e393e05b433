"""Tools for the bad-input suites (tests/test_bad_inputs_*.py).

Each case asserts what a user is owed: a one-line error that names the input (exit code 2, no
Python traceback), nothing silently accepted, no user file changed, no partial file left, no hang.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
from pathlib import Path

import pytest

from controlnet.cli import main


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run `controlnet ARGV` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(argv: list[str], capsys, *fragments: str, code: int = 2) -> str:
    """The command fails with `code`, one clear message containing every fragment (case-insensitive),
    and no traceback. Returns the message."""
    got, out, err = run_cli(argv, capsys)
    assert got == code, f"exit code {got} (wanted {code}); stderr: {err[-2000:]}"
    assert "Traceback" not in err and "Traceback" not in out, err
    assert "internal error" not in err, err
    lowered = err.lower()
    for fragment in fragments:
        assert fragment.lower() in lowered, f"{fragment!r} not in the message: {err}"
    return err


def snapshot(folder: str | os.PathLike) -> dict[str, str]:
    """{relative path: sha256} of every file under `folder` (hidden temp files included)."""
    root = Path(folder)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def unchanged(folder: str | os.PathLike, allow_new: tuple[str, ...] = ()):
    """Assert that no file under `folder` changes, disappears or appears (except names in
    `allow_new`) while the block runs: a failed command leaves the user's files as they were."""
    before = snapshot(folder)
    yield
    after = snapshot(folder)
    changed = sorted(k for k in before if after.get(k) != before[k])
    appeared = sorted(k for k in after if k not in before and not any(k.startswith(a) for a in allow_new))
    assert not changed, f"files changed or removed: {changed}"
    assert not appeared, f"files left behind: {appeared}"


@contextlib.contextmanager
def full_disk(limit_bytes: int = 4096):
    """Writes past `limit_bytes` in any one file fail with EFBIG, as on a full disk (RLIMIT_FSIZE;
    Python ignores SIGXFSZ, so the write raises OSError instead of killing the process)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@contextlib.contextmanager
def read_only(folder: str | os.PathLike):
    """`folder` cannot be written in. Root ignores permissions, so as root the block runs without
    the capabilities that bypass them (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), in this
    thread; root still owns and reads its own files, so only the mode 555 stops the writes."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mode = folder.stat().st_mode
    os.chmod(folder, 0o555)
    try:
        with _without_dac_capabilities():
            yield folder
    finally:
        os.chmod(folder, mode)


_DAC_CAPS = (1 << 1) | (1 << 2) | (1 << 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


@contextlib.contextmanager
def _without_dac_capabilities():
    if not (hasattr(os, "geteuid") and os.geteuid() == 0):
        yield
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    header, data = Header(0x20080522, 0), (Data * 2)()  # _LINUX_CAPABILITY_VERSION_3
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    saved = data[0].effective
    data[0].effective = saved & ~_DAC_CAPS
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0].effective = saved
        libc.capset(ctypes.byref(header), data)


needs_posix = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX only")
