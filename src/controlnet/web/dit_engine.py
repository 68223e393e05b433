"""The server's engine on an SD3 / SD3.5 or Flux base (`controlnet serve --model <such a folder>`): the
same catalog, API and jobs as `Engine`, with the base loaded as `SD3Base` / `FluxBase` and each picture
sampled by `sample_sd3` / `sample_flux` (txt2img as `controlnet generate` samples it: one seed per
picture, the same hint fitting; img2img from the init image at the request's strength).

What these bases do not run (inpainting, U-Net control modes, per-layer weights, ...) is refused when
the request is parsed (`web.unsupported.check_transformer_base`), naming the field.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from controlnet.errors import InputError
from controlnet.web.engine import Engine, Generated, Interrupted
from controlnet.web.inputs import FieldError
from controlnet.web.schema import GenerationRequest
from controlnet.web.stopping import stoppable


def open_engine(model: str = "mini", controlnet_dir=None, device: str = "cpu", dtype: str = "fp32", annotator_dir=None,
                compile: bool = False, control_lora=None):
    """The engine for `model`: a `DiTEngine` for an SD3 / Flux folder, else the U-Net `Engine`; `control_lora`:
    a FLUX.1 Control LoRA for a Flux folder (`checkpoints.flux_control_lora`)."""
    from controlnet.assets import resolve_model
    from controlnet.generation import dit_kind
    from controlnet.web.engine import Engine as UNetEngine  # looked up now (tests stand a fake in)

    kind = dit_kind(str(resolve_model(model))) if model != "mini" else None
    if kind and Path(str(resolve_model(model))).is_file():
        raise InputError(f"--model {model} is a {kind} transformer alone; serve takes a transformer base as a diffusers "
                         "folder (model_index.json, its text encoders, VAE and scheduler)")
    if kind and compile:
        raise InputError(f"--compile: {model} is a transformer base; compiling is for U-Net bases (serve it without --compile)")
    if control_lora is not None and kind != "flux":
        raise InputError(f"--control-lora is for a Flux base model (a FLUX.1-dev folder as --model); {model} is "
                         f"{'an SD3' if kind else 'a U-Net'} base")
    cls = DiTEngine if kind else UNetEngine
    extra = {"compile": True} if compile else {}
    extra.update({"control_lora": control_lora} if control_lora is not None else {})
    return cls(model, controlnet_dir, device=device, dtype=dtype, annotator_dir=annotator_dir, **extra)


class DiTEngine(Engine):
    """An SD3 / Flux base and the ControlNets of --controlnet-dir made for its family (the others are
    not listed: they cannot run on it)."""

    denoiser_folder = "transformer"

    def __init__(self, *args, control_lora=None, **kwargs):
        self.control_lora = control_lora  # read as the base loads (Engine.__init__ calls _load_base)
        super().__init__(*args, **kwargs)

    @property
    def takes_control_image(self) -> bool:
        """A FLUX.1 Control base (or a Flux base with a Control LoRA): each request sends its hint."""
        from controlnet.pipeline.flux import is_control_base

        return self.base_kind == "flux" and is_control_base(self.pipe.transformer)

    def _load_base(self, device: str):
        from controlnet.generation import DIT_NAMES, dit_kind
        from controlnet.pipeline.flux import FluxBase
        from controlnet.pipeline.sd3 import SD3Base

        self.base_kind = dit_kind(str(self.model_path))
        self.base_name = DIT_NAMES[self.base_kind]
        cls = FluxBase if self.base_kind == "flux" else SD3Base
        return cls.from_pretrained(self.model_path, dtype=self.dtype, device=device, control_lora=self.control_lora)

    def _usable(self, found: dict[str, Path]) -> dict[str, Path]:
        from controlnet.checkpoints.dit import dit_layout_of
        from controlnet.generation import DIT_NETS

        return {name: p for name, p in found.items() if DIT_NETS.get(dit_layout_of(p)) == self.base_kind}

    @functools.cached_property
    def step_cost(self):
        """One timed sampling step without ControlNet at three sizes (`web.cost`'s fit), best of two."""
        import torch

        from controlnet.web.cost import MEASURED_SIDES, fit

        pixels, seconds = [], []
        for side in MEASURED_SIDES:
            size = side * self.pipe.vae_scale_factor
            size -= size % self.pipe.size_multiple
            best = float("inf")
            hint = {"control_image": torch.zeros(1, 3, size, size, dtype=self.pipe.transformer.dtype)} \
                if self.takes_control_image else {}
            for _ in range(2):
                start = time.perf_counter()
                self.pipe("", [], width=size, height=size, steps=1, guidance_scale=1.0, output_type="latent",
                          generator=torch.Generator().manual_seed(0), **hint).cpu()
                best = min(best, time.perf_counter() - start)
            pixels.append(side * side)
            seconds.append(best)
        return fit(pixels, seconds)

    @property
    def default_size(self) -> int:
        sample = self.pipe.transformer.config.get("sample_size")  # SD3's latent side; Flux has none: 1024 px
        return int(sample) * self.pipe.vae_scale_factor if sample else 1024

    def png_parameters(self, req: GenerationRequest, seed: int, out: Generated) -> dict:
        """The U-Net engine's, with the Control LoRA's file name (as the model's: no server path)."""
        params = super().png_parameters(req, seed, out)
        if self.control_lora is not None:
            params["control_lora"] = Path(self.control_lora).name
        return params

    def controlnet(self, name: str):
        if name not in self._loaded:
            from controlnet.checkpoints import load_controlnet

            t = self.pipe.transformer
            self._loaded[name] = load_controlnet(self.controlnets[name], dtype=t.dtype, device=t.device)
        return self._loaded[name]

    def _controls(self, req: GenerationRequest) -> tuple[list, list]:
        """(SD3Control / FluxControl per unit, the maps kept for the answer), each hint fitted as `generate`
        fits it."""
        from controlnet.pipeline.flux import FluxControl
        from controlnet.pipeline.images import hint_tensor, resize_mode, to_pil
        from controlnet.pipeline.sd3 import SD3Control

        control = SD3Control if self.base_kind == "sd3" else FluxControl
        controls, maps = [], []
        for u in req.units:
            net = self.loaded_controlnet(u)
            if net.config.get("num_mode") is not None or net.config.get("extra_conditioning_channels"):
                raise FieldError(f"{u.field}.model", f"{u.model} is a {net.family}: union and inpainting "
                                                     f"{self.base_name} ControlNets are not offered by this server")
            hint = hint_tensor(self.condition(u, req.width, req.height), req.width, req.height, resize_mode(u.resize))
            controls.append(control(net, hint * 2 - 1, u.weight, u.start, u.end))
            if u.save_map:
                maps.append(to_pil(hint))
        return controls, maps

    def _networks(self, controls) -> list:
        base = self.pipe
        return [m for m in (base.transformer, base.vae, base.text_encoder, base.text_encoder_2,
                            getattr(base, "text_encoder_3", None)) if m is not None] + [c.controlnet for c in controls]

    def generate(self, req: GenerationRequest, on_step: Callable[[int, int], None]) -> Generated:
        """batch_size × n_iter pictures, one seed each (seed, seed+1, ...); `on_step(done, total)` runs
        before each network block and may raise Interrupted (the pictures finished so far are kept)."""
        import random

        import torch
        from diffusers.image_processor import VaeImageProcessor

        from controlnet.pipeline.sampling import seed_at

        images, total, forwards = req.batch_size * req.n_iter, req.steps_run * req.n_iter, [0]

        def check():  # progress in steps of a batch, as the U-Net engine counts them
            on_step(min(forwards[0] // req.batch_size, total), total)

        seed = req.seed if req.seed is not None else random.randint(0, 2**32 - 1 - images)
        out = Generated([], [], [], [], warnings=list(req.warnings))
        options = dict(width=req.width, height=req.height, steps=req.steps, guidance_scale=req.cfg, output_type="np")
        if self.base_kind == "sd3":
            options["negative_prompt"] = req.negative_prompt
        if req.control_image is not None:  # fitted as generate --control-image fits it (crop and resize)
            from controlnet.pipeline.images import hint_tensor

            hint = hint_tensor(req.control_image, req.width, req.height, "crop_and_resize")
            options["control_image"] = (hint * 2 - 1).to(self.pipe.transformer.dtype)
        if req.init_image is not None:  # img2img: fitted by the request's resize_mode, in [-1, 1]
            from controlnet.images import fit, to_rgb

            fitted = fit(to_rgb(req.init_image), (req.width, req.height), req.init_resize)
            options.update(init_image=torch.from_numpy(fitted).permute(2, 0, 1)[None].float() * 2 - 1,
                           strength=req.strength)
        step = self.pipe.transformer.proj_out.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
        try:
            check()
            controls, maps = self._controls(req)
            with stoppable(self._networks(controls), check):
                for k in range(images):
                    pixels = self.pipe(req.prompt, controls, generator=torch.Generator().manual_seed(seed_at(seed, k)),
                                       **options)
                    out.images += VaeImageProcessor.numpy_to_pil(pixels)
                    out.seeds.append(seed_at(seed, k))
            out.maps = maps
        except Interrupted as stop:
            out.interrupted = True
            out.warnings += [str(stop)] if str(stop) else []
            out.warnings.append(f"interrupted: {len(out.images)} of {images} pictures were finished ({self.base_name} "
                                "pictures are not decoded part-way)")
        finally:
            step.remove()
        out.params = [self.png_parameters(req, s, out) for s in out.seeds]
        return out
