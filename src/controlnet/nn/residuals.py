"""What a ControlNet hands the U-Net: one residual per skip connection plus one for the middle block.

Order is diffusers': `down[0]` belongs to the output of `conv_in`, then one per resnet / attention
pair and one per downsampler, `mid` to the middle block's output. The original code's
`zero_convs[i]` is `down[i]` and `middle_block_out` is `mid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

# A per-connection scale: a number, or a tensor that broadcasts against that residual (a mask).
Scale = float | torch.Tensor


class ControlResiduals(NamedTuple):
    down: tuple[torch.Tensor, ...]
    mid: torch.Tensor

    @property
    def num_connections(self) -> int:
        """13 for SD 1.x/2.x, 10 for SDXL."""
        return len(self.down) + 1

    def scaled(self, scales: Scale | Sequence[Scale] | None) -> ControlResiduals:
        """Multiply connection i by scales[i] (the last one is the middle block's); a single
        number scales all of them; None leaves them as they are."""
        if scales is None or _ones(scales, self.num_connections):  # x * 1.0 == x exactly: skip the kernels (a launch each on a GPU)
            return self
        if isinstance(scales, (int, float)) or (torch.is_tensor(scales) and scales.ndim == 0):
            return ControlResiduals(tuple(d * scales for d in self.down), self.mid * scales)
        scales = list(scales)
        if len(scales) != self.num_connections:
            raise ValueError(
                f"got {len(scales)} scales for {self.num_connections} ControlNet connections "
                f"({len(self.down)} skip connections + 1 middle block); give one per connection or one number"
            )
        return ControlResiduals(tuple(d * s for d, s in zip(self.down, scales[:-1])), self.mid * scales[-1])

    def pooled(self) -> ControlResiduals:
        """Global average pooling over H and W (the shuffle model's `global_average_pooling`)."""
        return ControlResiduals(
            tuple(d.mean(dim=(2, 3), keepdim=True) for d in self.down), self.mid.mean(dim=(2, 3), keepdim=True)
        )


def _ones(scales, count: int) -> bool:
    """The number 1, or `count` of them (not tensors: a mask of ones still broadcasts; a wrong count is refused later)."""
    if type(scales) in (int, float):
        return scales == 1
    return isinstance(scales, (list, tuple)) and len(scales) == count and all(type(s) in (int, float) and s == 1 for s in scales)


def soft_scales(n: int, weight: float = 1.0, base: float = 0.825) -> list[float]:
    """The original code's "guess mode" scales, `weight * base**(n-1-i)`: deep connections strong,
    shallow ones weak (0.0992 … 1.0 for n=13)."""
    return [weight * base ** (n - 1 - i) for i in range(n)]


def sum_residuals(controls: Sequence[tuple[ControlResiduals, Scale | Sequence[Scale] | None]]) -> ControlResiduals | None:
    """Several ControlNets compose by adding their scaled residuals (paper §3.4)."""
    total: ControlResiduals | None = None
    for residuals, scales in controls:
        r = residuals.scaled(scales)
        if total is None:
            total = r
            continue
        if r.num_connections != total.num_connections:
            raise ValueError(
                f"cannot add ControlNets with {total.num_connections} and {r.num_connections} connections: they were made for different base models"
            )
        total = ControlResiduals(tuple(a + b for a, b in zip(total.down, r.down)), total.mid + r.mid)
    return total
