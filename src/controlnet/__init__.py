"""controlnet-pytorch: ControlNet (Zhang, Rao, Agrawala; arXiv 2302.05543) for real use.

Names are imported on first use (PEP 562), so `import controlnet` and `controlnet --help` do not
pay for torch and diffusers until something needs them.
"""

from importlib import import_module

from controlnet.errors import CheckpointError, ControlNetError, InputError, MissingFileError

__version__ = "0.1.0"

_LAZY = {
    "annotate": "controlnet.annotators",
    "load_controlnet": "controlnet.checkpoints",
    "save_controlnet": "controlnet.checkpoints",
    "ControlPipeline": "controlnet.pipeline",
    "ControlUnit": "controlnet.pipeline",
    "ControlNet": "controlnet.nn",
    "ControlResiduals": "controlnet.nn",
    "controlled_unet": "controlnet.nn",
}

__all__ = ["CheckpointError", "ControlNetError", "InputError", "MissingFileError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'controlnet' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
