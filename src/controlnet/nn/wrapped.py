"""The base of the unit networks that wrap a diffusers adapter (ControlNet-XS, T2I-Adapter)."""

from __future__ import annotations

import torch
from torch import nn


class WrappedAdapter(nn.Module):
    """Holds a diffusers `adapter` and answers for it as the samplers ask a network: its config,
    dtype and device (read from its parameters, which follow `.to`)."""

    def __init__(self, adapter):
        super().__init__()
        self.adapter = adapter

    @property
    def config(self):
        return self.adapter.config

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
