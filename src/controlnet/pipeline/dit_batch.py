"""A transformer base (Flux, SD3) behind the U-Net pipeline's batch interface (`__call__` with units,
`.images`), so that `evaluate` and `demo` sample it as they sample a U-Net: with the sampler
`generate` uses for these bases (`FluxBase` / `SD3Base`).

Image k of a run is drawn with its own generator seeded `seed + k`, so a picture depends on its seed
alone, as the U-Net rows' do. The guidance scale is CFG: SD3's, true CFG with the empty negative
prompt for a Flux base without embedded guidance (the miniature mini-dit), the embedded guidance
of a guidance-distilled Flux base.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from controlnet.errors import InputError

DIT_SCHEDULER = "euler"  # flow matching's Euler: the one sampler of the transformer bases


class DiTBatchPipe:
    def __init__(self, base):
        self.base = base
        self.kind = base.kind

    @property
    def picture_size(self) -> int:
        """The size the base was trained at: its autoencoder's sample size (64 for mini-dit)."""
        return int(self.base.vae.config.sample_size)

    @staticmethod
    def make_unit(controlnet, image, *, weight: float, mode: str | None = None, resize: str | None = None):
        """A row's ControlNet and hints (the U-Net `ControlUnit` holds U-Net ControlNets only)."""
        return SimpleNamespace(controlnet=controlnet, image=image, weight=weight, mode=mode, resize=resize)

    def __call__(self, prompts: list[str], *, units=(), steps: int, guidance_scale: float, scheduler: str, seed: int,
                 width: int | None = None, height: int | None = None, output_type: str = "np", progress: bool = False,
                 approx=None):
        width, height = width or self.picture_size, height or self.picture_size
        if approx:
            raise InputError(f"approximate modes ({', '.join(approx)}) are for U-Net bases; a {self.kind} base "
                             "samples exactly: leave them out")
        if scheduler != DIT_SCHEDULER:
            raise InputError(f"--scheduler {scheduler}: a {self.kind} base samples with flow matching's Euler; "
                             f"give --scheduler {DIT_SCHEDULER} or leave it out")
        options = dict(width=width, height=height, steps=steps, output_type="np")
        if self.kind == "sd3" or self.base.transformer.config.guidance_embeds:
            options["guidance_scale"] = guidance_scale
            options.update(negative_prompt="") if self.kind == "sd3" else None
        elif guidance_scale > 1:
            options.update(negative_prompt="", true_cfg_scale=guidance_scale)
        images = []
        for k, prompt in enumerate(prompts):
            controls = [self._control(u, k, width, height) for u in units]
            out = self.base(prompt, controls, generator=torch.Generator().manual_seed(seed + k), **options)
            images.append(np.asarray(out)[0])
        return SimpleNamespace(images=images)

    def _control(self, unit, k: int, width: int, height: int):
        """The k-th picture's hint, fitted and scaled as `generate` feeds a transformer base's ControlNet."""
        from controlnet.pipeline.flux import FluxControl
        from controlnet.pipeline.images import hint_tensor
        from controlnet.pipeline.sd3 import SD3Control

        if unit.mode not in (None, "balanced"):
            raise InputError(f"--mode {unit.mode}: control modes are for U-Net bases; leave it out")
        image = unit.image[k] if isinstance(unit.image, (list, tuple)) else unit.image
        pixels = hint_tensor(image, width, height, unit.resize) * 2 - 1
        make = SD3Control if self.kind == "sd3" else FluxControl
        return make(unit.controlnet, pixels.to(self.base.transformer.dtype), unit.weight)


def load_dit_pipe(path, device: str = "cpu") -> DiTBatchPipe:
    from controlnet.pipeline.flux import FluxBase
    from controlnet.pipeline.loading import base_kind, read_model_index
    from controlnet.pipeline.sd3 import SD3Base

    kind = base_kind(read_model_index(path))
    base = (FluxBase if kind == "flux" else SD3Base).from_pretrained(path, dtype=torch.float32, device=device)
    base.transformer.requires_grad_(False)
    return DiTBatchPipe(base)
