"""Stopping a running job within about a second at any admitted size: the stop check runs before
every block of the networks (U-Net, ControlNets, VAE, text encoders), not only between sampling
steps, so neither a huge step nor a long prompt's encoding holds the worker after an interrupt."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch


def blocks(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every child of every ModuleList: U-Net / ControlNet down and up blocks and their resnets and
    attentions, the VAE's blocks, a text encoder's layers."""
    for module in network.modules():
        if isinstance(module, torch.nn.ModuleList):
            yield from module


@contextlib.contextmanager
def check_between_blocks(networks: Iterable[torch.nn.Module | None], check: Callable[[], None]):
    """Within the block, `check()` (which raises to stop the work) runs before each of the networks' blocks."""
    handles = []
    try:
        for network in networks:
            if network is not None:
                handles += [block.register_forward_pre_hook(lambda *_: check()) for block in blocks(network)]
        yield
    finally:
        for handle in handles:
            handle.remove()
