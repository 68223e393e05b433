"""`controlnet generate`'s work below the command line: a `Job` (the parsed options) is prepared
(a `--from` replay applied, built-in names resolved, recommended settings filled in), its pictures
read, the models loaded once (`Models`), sampled (`sample`) and saved as PNGs carrying their
parameters. The CLI parses the options and calls these; a batch (a unit's `--image` is a folder)
runs `sample` once per picture."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from controlnet.errors import InputError, MissingFileError
from controlnet.parameters import parameters, png_info, replay


@dataclass
class Job:
    """One `generate` run: the command's options after parsing (their flags in the comments). Units
    are dicts of `controlnet.parameters.UNIT_DEFAULTS`' keys plus `controlnet`, `_<key>_set` marking
    the values the user gave; `--from` replaces fields, so they stay plain attributes."""

    model: str | None = None
    config: str | None = None
    units: list = field(default_factory=list)
    prompt: str = ""
    negative_prompt: str = ""
    steps: int | None = None
    guidance_scale: float | None = None  # --cfg
    true_cfg: float | None = None  # a Flux base's true CFG (diffusers' true_cfg_scale)
    control_image: str | None = None  # the hint of a FLUX.1 Control base (on its input channels)
    control_lora: str | None = None  # a FLUX.1 Control LoRA making the plain Flux base such a base
    scheduler: str | None = None
    eta: float = 0.0
    seed: int | None = None
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    resize: str = "crop_and_resize"
    init_image: str | None = None
    strength: float | None = None
    inpaint_mask: str | None = None
    inpaint_mode: str = "blend"
    mask_blur: float | None = None
    dtype: str = "fp32"
    device: str = "cpu"
    compile: bool = False  # torch.compile (`controlnet.pipeline.compiled`)
    approx: dict = field(default_factory=dict)  # approximate modes (`controlnet.pipeline.reuse`); {}: exact
    from_png: str | None = None  # --from
    outdir: str = "outputs"  # -o
    no_grid: bool = False


def prepare(job: Job, warn: Callable[[str], None]) -> Path:
    """Complete the job before anything heavy runs: a `--from` replay (what it cannot reproduce goes
    to `warn`), the models resolved, the recommended settings; returns the output folder, checked
    writable now rather than after minutes of sampling. Values are checked by the API (ControlUnit,
    ControlPipeline)."""
    from controlnet.files import writable_folder

    if job.from_png:
        for note in replay(job, job.from_png):
            warn(note)
    elif any(u["controlnet"] is None for u in job.units):
        raise InputError("give --controlnet FILE before --image (without it, --image gives a --from replay's pictures)")
    _resolve_models(job)
    _refuse_dit_non_base(job.model)
    kind = dit_kind(job.model)
    if kind and job.compile:
        raise InputError(f"--compile is for U-Net base models; this {kind} base runs eagerly: leave --compile out")
    if kind and job.approx:
        raise InputError(f"approximate modes ({', '.join(job.approx)}) are for U-Net base models; this {kind} base runs "
                         "exactly: leave them out")
    job.approx = _checked_approx(job.approx)
    if kind:
        _prepare_dit(job, kind)
    elif job.true_cfg is not None:
        raise InputError("--true-cfg is for Flux base models; this base takes --cfg")
    elif job.control_lora:
        raise InputError("--control-lora is for a Flux base model (a FLUX.1-dev folder as --model); this base takes its "
                         "hints through --controlnet FILE --image IMG")
    elif job.control_image:
        raise InputError("--control-image is for FLUX.1 Control base models (Canny/Depth dev); this base takes its hints "
                         "through --controlnet FILE --image IMG")
    if job.strength is not None and not job.init_image:  # the API takes a strength it ignores for txt2img
        raise InputError("--strength does nothing without --init-image (img2img); give the picture to start from or "
                         "leave --strength out")
    if not kind:
        apply_recommended(job)
    return writable_folder(job.outdir, "output folder (-o)", create=False)


def _checked_approx(approx: dict | None) -> dict:
    """The approximate modes checked by the API's rule before anything loads (they may come from a PNG)."""
    from controlnet.pipeline.reuse import approximation

    return approximation(approx or None).asked()


def _resolve_models(args) -> None:
    """Built-in names ('mini', 'mini:edges') -> folders; a ControlNet that is not there fails now."""
    from controlnet.assets import resolve_controlnet, resolve_model

    if not args.model:
        raise InputError("give the base model with --model (a diffusers folder, a single-file checkpoint, or 'mini')")
    args.model = str(resolve_model(args.model))
    for u in args.units:
        u["controlnet"] = str(resolve_controlnet(u["controlnet"]))
        if not Path(u["controlnet"]).exists():
            raise MissingFileError(f"ControlNet not found: {u['controlnet']}")


def apply_recommended(args) -> None:
    """Values the user did not give come from the ControlNets' recommended settings
    (`controlnet.recommended`), else the defaults: weight and mode per unit; CFG, steps and sampler
    when the units agree."""
    from controlnet import recommended

    for u in args.units:
        for key in ("weight", "mode"):
            u[key] = recommended.choose(key, u[key] if u.get(f"_{key}_set") else None, [u["controlnet"]], u[key])[0]
    nets = [u["controlnet"] for u in args.units]
    args.guidance_scale = recommended.choose("guidance_scale", args.guidance_scale, nets, 9.0)[0]
    args.steps = recommended.choose("steps", args.steps, nets, 20)[0]
    args.scheduler = recommended.choose("scheduler", args.scheduler, nets, "ddim")[0]


def _unit_images(unit: dict, width, height, resize: str | None, inpaint_mask=None, device=None):
    """(condition image, mask) of one unit, read before any model is loaded so a bad file fails fast.
    `--preprocess inpaint` takes the inpainting mask (as A1111's inpaint preprocessors do); a learned preprocessor
    runs on `device` (generate's --device)."""
    from controlnet.pipeline.images import load_image

    if not unit["image"]:
        raise InputError(f"the unit of --controlnet {unit['controlnet']} has no --image")
    image = load_image(unit["image"])
    mask = load_image(unit["mask"]) if unit["mask"] else None
    if not unit["preprocess"]:
        return image, mask
    if unit["preprocess"] == "inpaint":
        from controlnet.pipeline.inpaint import inpaint_map

        return inpaint_map(image, inpaint_mask), mask
    try:
        from controlnet.annotators import annotate, get_annotator
    except ImportError:
        raise InputError("--preprocess needs the annotators (controlnet.annotators), which are not available in this install") from None
    # how the preprocessor runs, recorded in the unit (its PNG stores it; a --from replay gives it back)
    unit["processor_res"] = unit["processor_res"] or 512
    unit["pixel_perfect"] = bool(width and height) if unit["pixel_perfect"] is None else unit["pixel_perfect"]
    unit["preprocess_params"] = get_annotator(unit["preprocess"]).bind(unit["preprocess_params"] or {})
    size = {"width": width, "height": height, "resize_mode": resize or "crop_and_resize"} if width and height else {}
    return annotate(unit["preprocess"], image, unit["processor_res"], pixel_perfect=unit["pixel_perfect"], **size,
                    device=device, **unit["preprocess_params"]), mask


def _units(specs: list[dict], images: list[tuple], resize: str | None, pipe, nets: dict | None = None) -> list:
    """ControlUnits (their fields are checked there); each ControlNet file is loaded once, in the pipeline's dtype
    (`nets`: the ones already loaded, by path, kept across a batch)."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.pipeline import ControlUnit

    nets = {} if nets is None else nets
    units = []
    for i, (u, (image, mask)) in enumerate(zip(specs, images)):
        key = str(Path(u["controlnet"]).resolve())
        if key not in nets:
            nets[key] = load_controlnet(u["controlnet"], dtype=pipe.unet.dtype, device=pipe.device, base=pipe.unet)
        units.append(ControlUnit(nets[key], image, weight=u["weight"], start=u["start"], end=u["end"], mode=u["mode"],
                                 mask=mask, resize=resize, name=f"unit {i + 1} ({Path(u['controlnet']).name})",
                                 schedule=u["schedule"], schedule_interpolation=u["schedule_interpolation"],
                                 control_type=u.get("control_type")))
    return units


def _next_index(outdir: Path) -> int:
    from controlnet.checks import digits

    taken = [digits(p.name.split("-")[0]) for p in outdir.glob("*.png")]
    return max((i for i in taken if i is not None), default=-1) + 1


def make_grid(hints: list, samples: list):
    """One row: condition maps first, then the samples, all scaled to the samples' height."""
    from PIL import Image

    height = samples[0].height
    tiles = [h.resize((max(1, round(h.width * height / h.height)), height)) for h in hints] + list(samples)
    grid = Image.new("RGB", (sum(t.width for t in tiles), height), "white")
    x = 0
    for t in tiles:
        grid.paste(t.convert("RGB"), (x, 0))
        x += t.width
    return grid


def save_outputs(out, args, outdir: Path) -> Iterator[Path]:
    """Each image as a PNG carrying its parameters, then the grid; every file written atomically.
    Yields each path once written."""
    import controlnet
    from controlnet.files import save_image

    index = _next_index(outdir)
    base = parameters(args)
    base.update(width=out.images[0].width, height=out.images[0].height, num_images=1, version=controlnet.__version__)
    for k, (image, seed) in enumerate(zip(out.images, out.seeds)):
        path = outdir / f"{index + k:05d}-{seed}.png"
        save_image(image, path, pnginfo=png_info({**base, "seed": seed}))
        yield path
    if not args.no_grid and (out.hints or len(out.images) > 1):
        path = outdir / f"grid-{index:05d}.png"
        save_image(make_grid([h for per_unit in out.hints for h in per_unit], out.images), path)
        yield path


class Models:
    """The base pipeline and ControlNets, loaded on first use and kept, so a batch loads them once."""

    def __init__(self, progress: bool = True):
        self.pipe, self.nets, self.progress = None, {}, progress

    def load(self, args):
        from controlnet.pipeline import ControlPipeline

        kind = dit_kind(args.model)
        if self.pipe is None and kind:
            from controlnet.pipeline.flux import FluxBase
            from controlnet.pipeline.sd3 import SD3Base

            single = Path(args.model).is_file()  # a transformer file; the rest of the base from --config
            self.pipe = (FluxBase if kind == "flux" else SD3Base).from_pretrained(
                args.config if single else args.model, dtype=args.dtype, device=args.device,
                transformer=args.model if single else None, control_lora=getattr(args, "control_lora", None))
        if self.pipe is None:
            self.pipe = ControlPipeline.from_pretrained(args.model, config=args.config, dtype=args.dtype, device=args.device)
            if getattr(args, "compile", False):
                self.pipe.enable_compile()
        return self.pipe


def sample(args, models: Models):
    """Read this run's images (before any model is loaded, so a bad file fails fast), then sample."""
    from controlnet.pipeline.images import load_image, resize_mode

    if dit_kind(args.model):
        return sample_dit(args, models)
    resize = resize_mode(args.resize)
    inpaint_mask = load_image(args.inpaint_mask) if args.inpaint_mask else None
    images = [_unit_images(u, args.width, args.height, resize, inpaint_mask, args.device) for u in args.units]
    init = load_image(args.init_image) if args.init_image else None
    pipe = models.load(args)
    units = _units(args.units, images, resize, pipe, models.nets)
    out = pipe(args.prompt, units, negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.guidance_scale,
               scheduler=args.scheduler, eta=args.eta, seed=args.seed, num_images=args.num_images, height=args.height,
               width=args.width, init_image=init, strength=args.strength, mask_image=inpaint_mask,
               inpaint_mode=args.inpaint_mode, mask_blur=args.mask_blur, init_resize=resize, progress=models.progress,
               approx=args.approx or None)
    return out


# ---------------------------------------------------------------------------------------- batches


def is_batch(args) -> bool:
    return any(u["image"] and Path(u["image"]).is_dir() for u in args.units)


def batch_items(args) -> list:
    """The batch's items; up-front errors (empty or image-less folders, names that do not pair) stop it."""
    from controlnet.pipeline.batch import pair_sources

    for u in args.units:
        if not u["image"]:
            raise InputError(f"the unit of --controlnet {u['controlnet']} has no --image")
    labels = [f"unit {i + 1}'s --image folder" for i in range(len(args.units))]
    return pair_sources([u["image"] for u in args.units], labels)


def item_job(args, item):
    """The command's options with this item's pictures as the units' images (also what its PNGs store)."""
    one = copy.copy(args)
    one.units = [{**u, "image": str(path)} for u, path in zip(args.units, item.images)]
    return one


def save_item(out, args, paths: list[Path]) -> Iterator[Path]:
    """Each picture under its input's name, carrying its parameters (so --from re-creates it).
    Yields each path once written."""
    import controlnet
    from controlnet.files import save_image

    base = parameters(args)
    base.update(width=out.images[0].width, height=out.images[0].height, num_images=1, version=controlnet.__version__)
    for path, image, seed in zip(paths, out.images, out.seeds):
        save_image(image, path, pnginfo=png_info({**base, "seed": seed}))
        yield path


# ---------------------------------------------------------------------------------------- transformer bases
# A Flux or SD3 `--model` takes the branch below: same job, same PNG parameters, sampled by
# `FluxBase` / `SD3Base` (controlnet.pipeline.flux / sd3).

DIT_NETS = {"sd3-diffusers": "sd3", "sd35-original": "sd3", "flux-diffusers": "flux", "xlabs-original": "flux"}
DIT_NAMES = {"flux": "Flux", "sd3": "SD3"}
DIT_DEFAULTS = {"flux": (3.5, 28), "sd3": (7.0, 28)}  # (guidance scale, steps): diffusers' pipelines' defaults


BASE_FILES = {"flux-base": "flux", "flux-control": "flux", "sd3-base": "sd3"}  # layouts of a transformer base file


def dit_kind(model: str | None) -> str | None:
    """"flux" or "sd3" when `model` is a diffusers folder of a transformer base or a single file of
    one's transformer (read from its header), else None (a U-Net base)."""
    from controlnet.pipeline.loading import base_kind, read_model_index

    if model and Path(model).is_file():
        from controlnet.checkpoints.dit import dit_layout_of

        return BASE_FILES.get(dit_layout_of(model))
    if not model or not (Path(model) / "model_index.json").is_file():
        return None
    kind = base_kind(read_model_index(Path(model)))
    return kind if kind in DIT_NAMES else None


def _refuse_dit_non_base(model: str) -> None:
    """A DiT ControlNet or a Flux LoRA given as --model: one line saying what it is."""
    from controlnet.checkpoints.dit import NOT_CONTROLNETS, dit_layout_of

    layout = dit_layout_of(model) if Path(model).is_file() else None
    if layout in DIT_NETS:
        raise InputError(f"--model {model} is a {DIT_NAMES[DIT_NETS[layout]]} ControlNet, not a base model: give it as "
                         "--controlnet FILE --image IMG, with its base as --model")
    if layout in ("flux-control-lora", "flux-lora"):
        raise InputError(f"--model {model}: {NOT_CONTROLNETS[layout]}; {CLI_PLACE[layout]}")


def _check_base_file(job: Job, kind: str) -> None:
    """A transformer file as --model takes the rest of its base (text encoders, VAE, scheduler) from
    --config, a diffusers folder of the same family."""
    if not Path(job.model).is_file():
        return
    need = f"give --config, a local {DIT_NAMES[kind]} diffusers folder (its text encoders, VAE and scheduler; the " \
           "transformer's weights are not needed)"
    if not job.config:
        raise InputError(f"--model {job.model} is a {DIT_NAMES[kind]} transformer alone: {need}")
    if dit_kind(job.config) != kind or not Path(job.config).is_dir():
        raise InputError(f"--config {job.config} is not a {DIT_NAMES[kind]} diffusers folder (model_index.json), but "
                         f"--model {job.model} is a {DIT_NAMES[kind]} transformer: {need}")


def _net_kind(path: str) -> str:
    """"flux", "sd3", or a phrase for a ControlNet made for neither (read from the file's header)."""
    from controlnet.checkpoints.dit import dit_layout_of

    layout = dit_layout_of(path)
    return DIT_NAMES.get(DIT_NETS.get(layout), None) or ("a U-Net (SD 1.x/2.x/XL)" if layout is None else layout)


CLI_PLACE = {  # where a base file given as --controlnet goes on the command line
    "flux-control": "give it as --model (a folder, or FILE with --config FLUX-FOLDER) and its hint with --control-image IMG",
    "flux-base": "give it as --model FILE --config FLUX-FOLDER", "sd3-base": "give it as --model FILE --config SD3-FOLDER",
    "flux-control-lora": "give it as --control-lora FILE, a plain Flux base as --model and its hint as --control-image IMG",
    "flux-lora": "generate applies FLUX.1 Control LoRAs only (--control-lora FILE)",
}


def _check_control_lora(job: Job) -> None:
    """A FLUX.1 Control LoRA needs its file and the hint it makes the base take (the file is read when
    the base loads: `FluxBase.from_pretrained(control_lora=...)`)."""
    if not Path(job.control_lora).is_file():
        raise MissingFileError(f"--control-lora {job.control_lora}: no such file")
    if not job.control_image:
        raise InputError("--control-lora makes the base a FLUX.1 Control model: give its hint with --control-image IMG")


def _prepare_dit(job: Job, kind: str) -> None:
    """Refuse what a transformer base cannot do (a ControlNet for another base, U-Net-only options),
    then fill in diffusers' defaults; the values the samplers do not check are checked here."""
    from controlnet import checks
    from controlnet.checkpoints.dit import NOT_CONTROLNETS

    _check_base_file(job, kind)
    if job.control_lora and kind == "flux":
        _check_control_lora(job)
    for u in job.units:
        made_for = _net_kind(u["controlnet"])
        if made_for in NOT_CONTROLNETS:
            place = CLI_PLACE.get(made_for)
            raise InputError(f"--controlnet {u['controlnet']}: {NOT_CONTROLNETS[made_for]}" + (f"; {place}" if place else ""))
        if made_for != DIT_NAMES[kind]:
            raise InputError(f"--controlnet {u['controlnet']} is a {made_for} ControlNet but --model {job.model} is a "
                             f"{DIT_NAMES[kind]} base model: give a {DIT_NAMES[kind]} ControlNet, or a base it was made for")
    unused = [flag for flag, used in (
        ("--scheduler", job.scheduler not in (None, "euler")), ("--eta", job.eta), ("--init-image", job.init_image),
        ("--inpaint-mask", job.inpaint_mask), ("--mask-blur", job.mask_blur is not None),
        ("--mode", any(u.get("_mode_set") and u["mode"] != "balanced" for u in job.units)),
        ("--schedule", any(u["schedule"] for u in job.units)),
        ("--mask", kind == "flux" and any(u["mask"] for u in job.units)),
        ("--true-cfg", kind == "sd3" and job.true_cfg is not None),
        ("--control-image", kind == "sd3" and job.control_image),
        ("--control-lora", kind == "sd3" and job.control_lora)) if used]
    if unused:
        raise InputError(f"{', '.join(unused)}: not supported with a {DIT_NAMES[kind]} base model (flow matching, "
                         "Euler); leave them out")
    if kind == "flux" and job.negative_prompt and not (job.true_cfg or 0) > 1:
        raise InputError("--negative-prompt: a Flux base uses it only with true CFG; give --true-cfg > 1 (two forwards "
                         "per step), or leave it out")
    guidance, steps = DIT_DEFAULTS[kind]
    job.scheduler = "euler"  # flow matching's Euler, the only one (the PNG's infotext says so)
    job.guidance_scale = checks.number("--guidance-scale", guidance if job.guidance_scale is None else job.guidance_scale,
                                       lo=0.0, hi=100.0)
    job.steps = steps if job.steps is None else job.steps
    checks.positive_int("--num-images", job.num_images)
    if job.true_cfg is not None:
        checks.number("--true-cfg", job.true_cfg, lo=0.0, hi=100.0)
    for u in job.units:
        checks.weight("--weight", u["weight"])


def _control_mode(value):
    """`--control-type` of a Flux union net: a name (canny, tile, ...) or its index."""
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value


def _dit_size(args, images: list, base) -> tuple[int, int]:
    """--width/--height as given; a side not given from the first condition image (keeping its aspect
    ratio; 1024 without one), rounded down to what the base takes."""
    from controlnet.pipeline.flux import vae_scale_factor
    from controlnet.pipeline.images import image_size
    from controlnet.pipeline.sampling import MAX_SIDE

    f = vae_scale_factor(base.vae) * (2 if base.kind == "flux" else base.transformer.config.patch_size)
    w, h = image_size(images[0][0]) if images else (1024, 1024)
    if args.width and not args.height:
        w, h = args.width, h * args.width / w
    elif args.height and not args.width:
        w, h = w * args.height / h, args.height
    w = args.width if args.width else max(f, int(w) // f * f)
    h = args.height if args.height else max(f, int(h) // f * f)
    if not (w <= MAX_SIDE and h <= MAX_SIDE):
        raise InputError(f"the output would be {w}x{h}; give --width and --height (multiples of {f}, at most {MAX_SIDE})")
    return w, h


def _dit_controls(args, images: list, base, nets: dict, width: int, height: int) -> tuple[list, list]:
    """(FluxControl / SD3Control per unit, its hint as fed) with each hint fitted by --resize."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.pipeline.flux import FluxControl
    from controlnet.pipeline.images import hint_tensor, mask_tensor, resize_mode, to_pil
    from controlnet.pipeline.sd3 import SD3Control

    controls, hints = [], []
    for u, (image, mask) in zip(args.units, images):
        key = str(Path(u["controlnet"]).resolve())
        if key not in nets:
            nets[key] = load_controlnet(u["controlnet"], dtype=base.transformer.dtype, device=base.transformer.device)
        hint = hint_tensor(image, width, height, resize_mode(args.resize))
        hints.append([to_pil(hint)])
        net, pixels = nets[key], hint * 2 - 1
        if base.kind == "sd3":
            if u.get("control_type"):
                raise InputError(f"--control-type is for Flux union ControlNets; {u['controlnet']} is an SD3 ControlNet")
            mask = None if mask is None else mask_tensor(mask, width, height)  # white: the inpainting net's area to repaint
            controls.append(SD3Control(net, pixels, u["weight"], u["start"], u["end"], mask=mask))
            continue
        if u.get("control_type") and net.config.num_mode is None:
            raise InputError(f"--control-type is for union ControlNets; {u['controlnet']} is not one: leave it out")
        controls.append(FluxControl(net, pixels, u["weight"], u["start"], u["end"], mode=_control_mode(u.get("control_type"))))
    return controls, hints


def _check_control_image(base, given: bool) -> None:
    """A FLUX.1 Control base takes its hint on its input channels (--control-image); no other base does."""
    from controlnet.pipeline.flux import is_control_base

    if base.kind == "flux" and is_control_base(base.transformer) and not given:
        raise InputError("this Flux base is a FLUX.1 Control model (Canny/Depth dev): give its hint with --control-image IMG")
    if given and not (base.kind == "flux" and is_control_base(base.transformer)):
        raise InputError(f"--control-image is for FLUX.1 Control base models; this {DIT_NAMES[base.kind]} base takes its "
                         "hints through --controlnet FILE --image IMG")


def sample_dit(args, models: Models):
    """One picture per seed (seed, seed+1, ...) from a Flux / SD3 base, as `FluxBase` / `SD3Base` sample it."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    from controlnet.pipeline.images import hint_tensor, load_image, resize_mode, to_pil
    from controlnet.pipeline.sampling import ControlPipelineOutput, _check_finite, _seeds

    images = [_unit_images(u, args.width, args.height, resize_mode(args.resize), device=args.device) for u in args.units]
    control_image = load_image(args.control_image) if args.control_image else None
    seeds = _seeds(args.seed, args.num_images)
    base = models.load(args)
    _check_control_image(base, control_image is not None)
    width, height = _dit_size(args, images or [(control_image, None)] * (control_image is not None), base)
    controls, hints = _dit_controls(args, images, base, models.nets, width, height)
    options = dict(width=width, height=height, steps=args.steps, guidance_scale=args.guidance_scale, output_type="np")
    if control_image is not None:  # fitted by --resize as the ControlNets' hints are
        hint = hint_tensor(control_image, width, height, resize_mode(args.resize))
        hints.append([to_pil(hint)])
        options["control_image"] = (hint * 2 - 1).to(base.transformer.dtype)
    if base.kind == "sd3":
        options["negative_prompt"] = args.negative_prompt
    elif args.true_cfg is not None and args.true_cfg > 1:
        options.update(negative_prompt=args.negative_prompt, true_cfg_scale=args.true_cfg)
    elif args.true_cfg is None and not base.transformer.config.guidance_embeds and args.guidance_scale > 1:
        # a Flux base without embedded guidance (mini-dit): --cfg is true CFG against the empty prompt
        options.update(negative_prompt="", true_cfg_scale=args.guidance_scale)
    out = []
    for seed in seeds:  # decoded as numbers, so that NaN is refused rather than saved black
        pixels = base(args.prompt, controls, generator=torch.Generator().manual_seed(seed), **options)
        _check_finite(torch.from_numpy(pixels), "the decoded pixels", base.transformer.dtype, args.guidance_scale)
        out += VaeImageProcessor.numpy_to_pil(pixels)
    return ControlPipelineOutput(images=out, seeds=seeds, hints=hints)
