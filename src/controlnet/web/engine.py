"""The models, loaded once, and what the worker does with them: sample (txt2img / img2img with
ControlNet units) and detect (run a preprocessor). Only the worker thread calls `generate` and
`detect`; the catalog methods are read-only and safe from any thread."""

from __future__ import annotations

import functools
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from controlnet.errors import ControlNetError, InputError, MissingFileError
from controlnet.web.inputs import FieldError
from controlnet.web.schema import DetectRequest, GenerationRequest, UnitRequest
from controlnet.web.stopping import stoppable

WEIGHT_FILES = (".safetensors", ".pth", ".ckpt", ".bin")
PARTIAL_DECODE_SECONDS = 2.0  # after an interrupt, the images reached so far are decoded within this


class Interrupted(Exception):
    """Raised from the step / block check to stop the running job."""


class Cancelled(Interrupted):
    """Stops the running job, whose result nobody wants (its client left, shutdown): nothing is decoded."""


@dataclass
class Generated:
    images: list  # PIL
    seeds: list[int]
    maps: list  # PIL, one per active unit that keeps its detected map
    params: list[dict]  # per image: the `controlnet generate` PNG parameters
    interrupted: bool = False
    warnings: list[str] = field(default_factory=list)
    partial_seeds: list[int] = field(default_factory=list)  # the pictures decoded from an interrupted run
    partial_step: int = 0  # ... at this step of its schedule


def short_hash(path: Path) -> str:
    """A1111's legacy model hash (sha256 of 64 KiB at 1 MiB), cheap even for 1.4 GB files."""
    target = path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_FILES)
        if not files:
            return "00000000"
        target = files[0]
    with open(target, "rb") as f:
        f.seek(0x100000 if target.stat().st_size > 0x110000 else 0)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def read_family(path: Path) -> tuple[str, int | None]:
    """(layout, union control types or None) of a checkpoint from its safetensors header alone (no
    tensor is read), so that a request is checked before it is queued; ("unknown", None) for a
    pickled file (the pipeline's own checks then apply when it is loaded)."""
    from safetensors import SafetensorError, safe_open

    from controlnet.checkpoints.layouts import detect_layout

    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or files[0].suffix != ".safetensors":
        return "unknown", None
    try:
        with safe_open(str(files[0]), framework="pt") as f:
            keys = list(f.keys())
            types = f.get_slice("task_embedding").get_shape()[0] if "task_embedding" in keys else None
    except (OSError, SafetensorError):
        return "unknown", None
    return detect_layout(keys), types


def find_controlnets(model: str, folder: str | os.PathLike | None) -> dict[str, Path]:
    """name -> path: the built-in ones when the model is 'mini', then every checkpoint in `folder`
    (files with weight suffixes, and diffusers folders with a config.json)."""
    from controlnet.assets import available_controlnets, mini_controlnet_dir

    found: dict[str, Path] = {}
    if model == "mini":
        found.update({f"mini-{c}": mini_controlnet_dir(c) for c in available_controlnets()})
    if folder is not None:
        root = Path(folder)
        if not root.is_dir():
            raise MissingFileError(f"--controlnet-dir: {root} is not a folder")
        for p in sorted(root.iterdir()):
            if (p.is_file() and p.suffix in WEIGHT_FILES) or (p.is_dir() and (p / "config.json").is_file()):
                found[p.stem if p.is_file() else p.name] = p
    return found


def by_unit(exc: InputError, req: GenerationRequest) -> InputError:
    """The pipeline's error about one unit (labelled with the unit's field: an adapter made for
    another base, a mode an adapter does not take) as a 422 naming that field."""
    text = str(exc)
    unit = next((u for u in req.units if text.startswith(f"{u.field}: ")), None)
    if isinstance(exc, FieldError) or unit is None:
        return exc
    return FieldError(unit.field, text.removeprefix(f"{unit.field}: "))


class Engine:
    """The base model (loaded now) and the ControlNets (each loaded on first use, then kept)."""

    def __init__(self, model: str = "mini", controlnet_dir=None, device: str = "cpu", dtype: str = "fp32",
                 annotator_dir=None, compile: bool = False):
        from controlnet.annotators.local_models import models_dir
        from controlnet.assets import resolve_model

        self.annotator_dir = models_dir(annotator_dir)  # --annotator-dir, else $CONTROLNET_ANNOTATOR_DIR
        self.model_name = "mini" if model == "mini" else Path(model).stem
        self.model_path = resolve_model(model)
        self.dtype = dtype
        self.pipe = self._load_base(device)
        self.device = str(device)  # the detectors run there too
        if compile:  # each new size and batch compiles on its first request (docs/performance.md)
            self.pipe.enable_compile()
        self.controlnets = self._usable(find_controlnets(model, controlnet_dir))
        self.hashes = {name: short_hash(p) for name, p in self.controlnets.items()}
        weights = self.model_path / self.denoiser_folder
        self.model_hash = short_hash(weights if weights.is_dir() else self.model_path)
        self._loaded: dict[str, object] = {}
        self._families: dict[str, tuple[str, int | None]] = {}

    base_kind = "unet"  # web.dit_engine.DiTEngine: "sd3" / "flux"
    denoiser_folder = "unet"

    def _load_base(self, device: str):
        from controlnet.pipeline import ControlPipeline

        return ControlPipeline.from_pretrained(self.model_path, dtype=self.dtype, device=device)

    def _usable(self, found: dict[str, Path]) -> dict[str, Path]:
        """The listed checkpoints this base can run (all: a misfit is named when it is loaded)."""
        return found

    # ------------------------------------------------------------------ catalog

    def controlnet_titles(self) -> list[str]:
        return [f"{name} [{self.hashes[name]}]" for name in self.controlnets]

    def union_titles(self) -> dict[str, int]:
        """title -> control type count of the union ControlNets listed (from their headers)."""
        return {title: self.family(name)[1] for name, title in zip(self.controlnets, self.controlnet_titles())
                if self.family(name)[1] is not None}

    def find_controlnet(self, title) -> str | None:
        """'name', 'name [hash]' or a file name with its suffix, case-insensitively -> name."""
        if not isinstance(title, str):
            return None
        key = title.split(" [")[0].strip().lower()
        for name, path in self.controlnets.items():
            if key in (name.lower(), path.name.lower()):
                return name
        return None

    def family(self, name: str) -> tuple[str, int | None]:
        """(layout, union control types or None) of a listed checkpoint, read once from its header."""
        if name not in self._families:
            self._families[name] = read_family(self.controlnets[name])
        return self._families[name]

    @functools.cached_property
    def step_cost(self):
        """Seconds per network forward at a size (`controlnet.web.cost`), timed on first use."""
        from controlnet.web.cost import measure

        return measure(self.pipe)

    @property
    def default_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.pipe.vae_scale_factor

    # ------------------------------------------------------------------ work

    def controlnet(self, name: str):
        if name not in self._loaded:
            from controlnet.checkpoints import load_controlnet

            self._loaded[name] = load_controlnet(self.controlnets[name], dtype=self.pipe.unet.dtype, device=self.pipe.device,
                                                 base=self.pipe.unet)  # a Control-LoRA is built on the served U-Net
        return self._loaded[name]

    def condition(self, u: UnitRequest, width: int, height: int) -> np.ndarray:
        """The unit's map at the output size: its preprocessor run on the image, or the image as given."""
        from controlnet.annotators import annotate
        from controlnet.web.modules import is_inpaint

        if u.module is None:
            return u.image
        if is_inpaint(u.module):
            from controlnet.pipeline.inpaint import inpaint_map

            return inpaint_map(u.image, u.mask)  # the control_v11p_sd15_inpaint hint: -1 where repainted
        try:
            return annotate(u.module, u.image, u.resolution, width=width, height=height, pixel_perfect=u.pixel_perfect,
                            resize_mode=u.resize, device=self.device, **u.params, **self.annotator_weights(u.module))
        except InputError as exc:
            raise FieldError(u.field, str(exc)) from None

    def loaded_controlnet(self, u: UnitRequest):
        """The unit's ControlNet; a checkpoint that cannot be loaded is named by the unit's model field."""
        try:
            return self.controlnet(u.model)
        except (InputError, ControlNetError) as exc:
            raise FieldError(f"{u.field}.model", f"{u.model} cannot be loaded on this server ({exc}); "
                                                 "GET /controlnet/model_list lists the others") from None

    def units(self, req: GenerationRequest) -> list:
        return [self._unit(u, req) for u in req.units]

    def _unit(self, u: UnitRequest, req: GenerationRequest):
        """One ControlUnit; what it refuses (its label is the unit's field) is a 422 naming the field."""
        from controlnet.pipeline import ControlUnit

        try:
            return ControlUnit(self.loaded_controlnet(u), self.condition(u, req.width, req.height), weight=u.weight, control_type=u.control_type,
                               start=u.start, end=u.end, mode=u.mode, layer_scales=u.layer_scales, mask=u.region_mask,
                               resize=u.resize, name=u.field, schedule=u.schedule,
                               schedule_interpolation=u.schedule_interpolation)
        except FieldError:
            raise
        except InputError as exc:
            raise FieldError(u.field, str(exc).removeprefix(f"{u.field}: ")) from None

    def generate(self, req: GenerationRequest, on_step: Callable[[int, int], None]) -> Generated:
        """n_iter batches of batch_size images (seeds seed, seed+1, ...). `on_step(done, total)` runs
        after each step and before each network block; it may raise Interrupted: the images reached
        so far are decoded and returned."""
        import random

        from controlnet.pipeline.sampling import seed_at

        total, done, last = req.steps_run * req.n_iter, [0], {}

        def check():
            on_step(done[0], total)

        seed = req.seed if req.seed is not None else random.randint(0, 2**32 - 1 - req.batch_size * req.n_iter)
        out = Generated([], [], [], [], warnings=list(req.warnings))
        try:
            check()  # the total is known before the first step; a job stopped meanwhile ends here
            units = self.units(req)
            # the inpainting options only with a region to repaint (the pipeline refuses them alone)
            inpainting = {} if req.mask is None else {"mask_image": req.mask, "inpaint_mode": req.inpaint_mode,
                                                      "mask_blur": req.mask_blur}
            init = req.init_image
            if req.mask is not None and req.inpaint_fill:
                from controlnet.pipeline.inpaint import fill_masked

                init = fill_masked(init, req.mask)
            with stoppable(self._networks(units), check, attention=getattr(self.pipe, "compiled", None) is None):
                for it in range(req.n_iter):
                    def step(i, t, x, it=it):
                        last["x"], last["seed"], last["step"] = x, seed_at(seed, it * req.batch_size), i + 1
                        done[0] = min(it * req.steps_run + i + 1, total)
                        on_step(done[0], total)

                    try:
                        res = self.pipe(req.prompt, units, negative_prompt=req.negative_prompt, steps=req.steps,
                                        guidance_scale=req.cfg, scheduler=req.sampler, eta=req.eta,
                                        seed=seed_at(seed, it * req.batch_size), num_images=req.batch_size,
                                        width=req.width, height=req.height, init_image=init, strength=req.strength,
                                        init_resize=req.init_resize, callback=step, progress=False,
                                        approx=req.approx or None, **inpainting)
                    except InputError as exc:
                        raise by_unit(exc, req) from None
                    last.clear()
                    out.images += res.images
                    out.seeds += res.seeds
                    if not out.maps:
                        out.maps = [hints[0] for u, hints in zip(req.units, res.hints) if u.save_map]
        except Interrupted as stop:
            out.interrupted = True
            out.warnings += [str(stop)] if str(stop) else []  # why it stopped, when not asked to
            if "x" in last and not isinstance(stop, Cancelled):
                self._keep_partial(out, last["x"], last["seed"], last["step"])
        out.params = [self.png_parameters(req, s, out) for s in out.seeds]
        return out

    def _networks(self, units) -> list:
        pipe = self.pipe
        compiled = [] if getattr(pipe, "compiled", None) is not None else [pipe.unet, *(u.controlnet for u in units)]  # see stoppable
        return [pipe.vae, pipe.text_encoder, pipe.text_encoder_2, *compiled]

    def _keep_partial(self, out: Generated, x, seed: int, step: int) -> None:
        """The latents reached at `step` before an interrupt, decoded, unless that would take longer
        than PARTIAL_DECODE_SECONDS (a big batch on a CPU): an interrupt must free the worker at once."""
        from controlnet.pipeline.images import to_pil
        from controlnet.pipeline.sampling import seed_at

        end = time.monotonic() + PARTIAL_DECODE_SECONDS

        def check():
            if time.monotonic() > end:
                raise Interrupted()

        try:
            with stoppable([self.pipe.vae], check):
                pixels = self.pipe.decode(x)
        except Interrupted:
            out.warnings.append(f"interrupted: the pictures reached so far were not decoded (that takes longer than "
                                f"{PARTIAL_DECODE_SECONDS:g} s here)")
            return
        out.images += [to_pil(p) for p in pixels]
        out.partial_seeds, out.partial_step = [seed_at(seed, k) for k in range(len(pixels))], step
        out.seeds += out.partial_seeds

    def png_parameters(self, req: GenerationRequest, seed: int, out: Generated) -> dict:
        """What `controlnet generate` stores in a PNG (its `controlnet` chunk), with names, not this
        server's paths: `generate --from` finds the built-in models by name; uploaded images are
        listed as `unstored` (a replay takes them from its command line)."""
        import controlnet
        from controlnet.annotators import get_annotator
        from controlnet.web.modules import is_inpaint

        resize = req.units[0].resize if req.units else "crop_and_resize"
        units = [{"index": u.index, "controlnet": self.controlnet_ref(u.model), "image": None, "weight": u.weight, "start": u.start,
                  "end": u.end, "mode": u.mode, "preprocess": u.module, "mask": None, "resize": u.resize,
                  "processor_res": u.resolution if u.module else None, "pixel_perfect": u.pixel_perfect,
                  "control_type": u.control_type, "preprocess_params": get_annotator(u.module).bind(u.params) if u.module and not is_inpaint(u.module) else None}
                 for u in req.units]
        img2img = req.init_image is not None
        params = {"model": "mini" if self.model_name == "mini" else self.model_path.name, "config": None, "prompt": req.prompt,
                  "negative_prompt": req.negative_prompt, "steps": req.steps, "cfg": req.cfg, "scheduler": req.sampler,
                  "eta": req.eta, "seed": seed, "num_images": 1, "width": req.width, "height": req.height, "resize": resize,
                  "init_image": None, "strength": req.strength if img2img else None, "dtype": self.dtype, "units": units,
                  "unstored": [f"units[{i}].image" for i in range(len(units))] + (["init_image"] if img2img else []) +
                              (["control_image"] if req.control_image is not None else []),
                  "approx": req.approx or None, "version": controlnet.__version__}
        if seed in out.partial_seeds:
            params["interrupted"] = {"step": out.partial_step}
        return params

    def controlnet_ref(self, name: str) -> str:
        """How `generate --controlnet` names one of this server's ControlNets: `mini:edges` for a
        built-in one, else its file or folder name (no server path)."""
        from controlnet.assets import MINI_DIR

        path = self.controlnets[name]
        if path.parent.resolve() == MINI_DIR.resolve() and path.name.startswith("controlnet-"):
            return "mini:" + path.name.removeprefix("controlnet-")
        return path.name

    def detect(self, req: DetectRequest) -> list[np.ndarray]:
        from controlnet.annotators import annotate

        weights = self.annotator_weights(req.module)
        return [annotate(req.module, image, req.resolution, device=self.device, **req.params, **weights) for image in req.images]

    def detect_poses(self, req: DetectRequest) -> list[dict] | None:
        """A1111's `poses` of /controlnet/detect: the OpenPose JSON of each image, for the openpose modules."""
        from controlnet.annotators.openpose_modules import JSON_MODULES, detect_json

        if req.module not in JSON_MODULES:
            return None
        model = self.annotator_weights(req.module)["model"]
        return [detect_json(req.module, image, req.resolution, model, self.device, **req.params) for image in req.images]

    def annotator_weights(self, module: str) -> dict:
        """The `model` parameter of a learned annotator: its weights in --annotator-dir (none for the others)."""
        from controlnet.web.modules import weights_path

        path = weights_path(module, self.annotator_dir)
        return {} if path is None else {"model": str(path)}
