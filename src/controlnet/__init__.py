"""controlnet-pytorch: ControlNet (Zhang, Rao, Agrawala; arXiv 2302.05543) for real use."""

from controlnet.annotators import annotate
from controlnet.checkpoints import load_controlnet, save_controlnet
from controlnet.errors import CheckpointError, ControlNetError, InputError, MissingFileError
from controlnet.nn import ControlNet, ControlResiduals, controlled_unet

__version__ = "0.1.0"

__all__ = [
    "annotate",
    "CheckpointError",
    "ControlNet",
    "ControlNetError",
    "ControlResiduals",
    "InputError",
    "MissingFileError",
    "controlled_unet",
    "load_controlnet",
    "save_controlnet",
]
