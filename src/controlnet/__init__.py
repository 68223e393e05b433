"""controlnet-pytorch: ControlNet (Zhang, Rao, Agrawala; arXiv 2302.05543) for real use.

Names are imported on first use (PEP 562), so `import controlnet` and `controlnet --help` do not
pay for torch and diffusers until something needs them.
"""

import logging

from controlnet._lazy import lazy_exports
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


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)


class _NoTorchvisionNotice(logging.Filter):
    """diffusers' pipelines import CLIP image processors we never use; without torchvision (not
    needed here) transformers warns about its fallback on every start. Drop just that notice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())
