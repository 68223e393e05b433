"""Errors users are meant to read: each names the problem and what to do about it.

The CLI prints these as one line and exits non-zero; anything else is a bug and keeps its traceback.
"""


class ControlNetError(Exception):
    """Base class for every user-facing error of this package."""


class CheckpointError(ControlNetError, ValueError):
    """A checkpoint file or folder cannot be read or does not match what it should hold."""


class InputError(ControlNetError, ValueError):
    """A user input (image, prompt, option) is invalid."""


class NonFiniteError(ControlNetError, ArithmeticError):
    """Sampling went numerically wrong (NaN or infinity): the picture would be black, so none is made."""


class MissingFileError(ControlNetError, FileNotFoundError):
    """A local file that would be downloaded elsewhere is missing here (we never download)."""
