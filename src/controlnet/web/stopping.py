"""Stopping a running job within about a second at any admitted size: `stoppable` runs the stop
check before every block of the networks (U-Net, ControlNets, VAE, text encoders), not only
between sampling steps, and between slices of a big attention (at 1024² one self-attention alone
takes many seconds on a CPU), so neither a huge step nor a long prompt's encoding holds the worker."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F

ATTENTION_PAIRS = 1 << 22  # query × key pairs per attention slice (256 queries of a 128² latent)


def blocks(network: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Every child of every ModuleList: U-Net / ControlNet down and up blocks and their resnets,
    attentions and transformer blocks, the VAE's blocks, a text encoder's layers."""
    for module in network.modules():
        if isinstance(module, torch.nn.ModuleList):
            yield from module


@contextlib.contextmanager
def _between_blocks(networks: Iterable[torch.nn.Module | None], check: Callable[[], None]):
    handles = []
    try:
        for network in networks:
            if network is not None:
                handles += [block.register_forward_pre_hook(lambda *_: check()) for block in blocks(network)]
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _inside_attention(check: Callable[[], None]):
    """torch's scaled_dot_product_attention, in this thread only, in slices of queries with `check()`
    before each; each query row is computed as before (the same keys and values)."""
    original, thread = F.scaled_dot_product_attention, threading.get_ident()

    def sliced(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        n = query.shape[-2]
        step = max(1, ATTENTION_PAIRS // max(1, key.shape[-2]))
        masked_per_query = attn_mask is None or (attn_mask.dim() >= 2 and attn_mask.shape[-2] == n)
        if threading.get_ident() != thread or n <= step or is_causal or not masked_per_query:
            return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)
        parts = []
        for start in range(0, n, step):
            check()
            mask = None if attn_mask is None else attn_mask[..., start:start + step, :]
            parts.append(original(query[..., start:start + step, :], key, value, attn_mask=mask, dropout_p=dropout_p,
                                  **kwargs))
        return torch.cat(parts, dim=-2)

    F.scaled_dot_product_attention = sliced
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


@contextlib.contextmanager
def stoppable(networks: Iterable[torch.nn.Module | None], check: Callable[[], None], attention: bool = True):
    """Within the block, `check()` (which raises to stop the work) runs before each of the networks'
    blocks and (`attention`) each slice of a big attention. Compiled networks are left out: a hook or
    a patched attention would change their graphs every job (`serve --compile` stops between steps)."""
    with _between_blocks(networks, check), _inside_attention(check) if attention else contextlib.nullcontext():
        yield
