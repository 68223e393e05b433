"""The ControlNet network: zero convs, the hint encoder, the trainable copy, and the controlled U-Net."""

from controlnet.nn.connections import Connection, connection_shapes, connections
from controlnet.nn.controlled_unet import check_residuals, controlled_unet, unet_connection_shapes
from controlnet.nn.controlnet import ControlNet, count_parameters, family_of
from controlnet.nn.hint_encoder import HintEncoder, default_widths
from controlnet.nn.residuals import ControlResiduals, soft_scales, sum_residuals
from controlnet.nn.zero_conv import gaussian_conv, zero_conv

__all__ = [
    "Connection",
    "ControlNet",
    "ControlResiduals",
    "HintEncoder",
    "check_residuals",
    "connection_shapes",
    "connections",
    "controlled_unet",
    "count_parameters",
    "default_widths",
    "family_of",
    "gaussian_conv",
    "soft_scales",
    "sum_residuals",
    "unet_connection_shapes",
    "zero_conv",
]
