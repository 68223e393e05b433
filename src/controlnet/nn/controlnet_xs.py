"""ControlNet-XS (Zavadski et al. 2023) as a unit's network: diffusers' `ControlNetXSAdapter`, coupled
with the base U-Net by diffusers' `UNetControlNetXSModel` (the coupling equation is written once, in
`controlnet.nn.controlled_unet.controlled_unet_xs`). The coupled model holds its own copy of the
base U-Net's weights, so it is built once per (adapter, U-Net) pair and kept.
"""

from __future__ import annotations

import torch

from controlnet.nn.wrapped import WrappedAdapter


class ControlNetXSNet(WrappedAdapter):
    """`embed_hint` only moves the hint: the coupled model encodes it in every step, as diffusers does."""

    is_xs = True

    def __init__(self, adapter):
        super().__init__(adapter)
        self.__dict__["_coupled"] = (None, None)  # (U-Net, coupled model): not a submodule

    @property
    def made_for(self) -> str:
        cross = self.adapter.config.cross_attention_dim
        return {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}.get(cross, f"a base with cross-attention width {cross}")

    def embed_hint(self, hint: torch.Tensor) -> torch.Tensor:
        return hint.to(self.dtype)

    def coupled(self, unet):
        """diffusers' `UNetControlNetXSModel` of this adapter and `unet` (ValueError when they do not fit)."""
        from diffusers import UNetControlNetXSModel

        known, model = self.__dict__["_coupled"]
        if known is not unet:
            try:
                model = UNetControlNetXSModel.from_unet(unet, controlnet=self.adapter)
            except (ValueError, RuntimeError, KeyError, AssertionError, TypeError, IndexError, AttributeError) as exc:
                raise ValueError(f"a ControlNet-XS made for {self.made_for} does not fit this base U-Net "
                                 f"(cross-attention width {unet.config.cross_attention_dim}): {str(exc).splitlines()[0][:200]}") from None
            model = model.to(unet.device, unet.dtype).eval()
            self.__dict__["_coupled"] = (unet, model)
        return model


def is_xs(net) -> bool:
    return bool(getattr(net, "is_xs", False))
