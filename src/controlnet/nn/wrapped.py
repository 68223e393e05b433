"""What the unit networks beyond the classic ControlNet share: dtype and device as the samplers ask
for them, and the wrapper around a diffusers adapter (ControlNet-XS, T2I-Adapter)."""

from __future__ import annotations

import torch
from torch import nn


class FollowsParameters:
    """dtype and device read from the module's parameters, which follow `.to` (mixed into an nn.Module)."""

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class WrappedAdapter(FollowsParameters, nn.Module):
    """Holds a diffusers `adapter` and answers for it as the samplers ask a network: its config,
    dtype and device."""

    def __init__(self, adapter):
        super().__init__()
        self.adapter = adapter

    @property
    def config(self):
        return self.adapter.config
