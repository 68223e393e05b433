"""`controlnet generate`: base model + ControlNet/condition-image pairs + prompt -> PNGs and a grid.

Units are given as repeated groups: `--controlnet FILE --image IMG [--weight W --start S --end E
--mode M --preprocess NAME --mask IMG --schedule F:S,...]`; the per-unit options after a `--controlnet` belong to it.
Every PNG carries its full parameters as JSON in the `controlnet` text chunk (and an A1111-style
`parameters` line), and `--from PNG` samples that exact image again (`--from PNG --image IMG`
gives the pictures a PNG does not store, e.g. one made by the server).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from controlnet.cli import quiet_libraries
from controlnet.errors import InputError, MissingFileError
from controlnet.parameters import UNIT_DEFAULTS, UNIT_IMAGES, parameters, png_info, replay


class UnitOption(argparse.Action):
    """`--controlnet` opens a unit; the per-unit options that follow fill in its fields. `--image` and
    `--mask` without a `--controlnet` give the pictures of a `--from` replay's units, in order."""

    def __call__(self, parser, namespace, value, option_string=None):
        units = getattr(namespace, "units", None) or []
        if self.dest in UNIT_IMAGES and (not units or (units[-1]["controlnet"] is None and units[-1].get(f"_{self.dest}_set"))):
            units.append({"controlnet": None, **UNIT_DEFAULTS})  # the pictures of a --from replay's next unit
        if self.dest == "controlnet":
            units.append({"controlnet": value, **UNIT_DEFAULTS})
        elif not units or (units[-1]["controlnet"] is None and self.dest not in UNIT_IMAGES):
            raise argparse.ArgumentError(self, f"give --controlnet FILE before {option_string}")
        elif units[-1].get(f"_{self.dest}_set"):
            raise argparse.ArgumentError(self, f"{option_string} given twice for unit {len(units)}; give --controlnet first")
        else:
            units[-1][self.dest] = value
            units[-1][f"_{self.dest}_set"] = True
        namespace.units = units


def register(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="sample images from a base model with one or more ControlNets",
        description="Sample images with ControlNet. Per-unit options follow their --controlnet: "
        "--controlnet canny.safetensors --image edges.png --weight 0.8 --controlnet depth.pth --image d.png --end 0.5",
    )
    p.add_argument("--model", help="base model: a diffusers folder (model_index.json), a single .safetensors/.ckpt file, or mini (built in)")
    p.add_argument("--config", help="for a single-file --model: a local diffusers-layout folder with its configs and tokenizers")
    unit = p.add_argument_group("control units (repeat --controlnet ... per unit)")
    unit.add_argument("--controlnet", action=UnitOption, metavar="FILE", help="a ControlNet checkpoint (any layout), or mini:edges / mini:seg / mini:depth (built in)")
    unit.add_argument("--image", action=UnitOption, metavar="IMG", help="its condition image (or the photo, with --preprocess)")
    unit.add_argument("--weight", action=UnitOption, type=float, metavar="W", help="control weight (default: the ControlNet's recommended, else 1.0)")
    unit.add_argument("--start", action=UnitOption, type=float, metavar="F", help="fraction of steps where it starts (0)")
    unit.add_argument("--end", action=UnitOption, type=float, metavar="F", help="fraction of steps where it ends (1; 0 = off)")
    unit.add_argument("--mode", action=UnitOption, metavar="MODE", help="balanced | prompt | control (guess mode) | cfg_rw")
    unit.add_argument("--preprocess", action=UnitOption, metavar="NAME", help="run this annotator on --image first (e.g. canny)")
    unit.add_argument("--mask", action=UnitOption, metavar="IMG", help="restrict the unit to the white area of this image")
    unit.add_argument("--control-type", action=UnitOption, metavar="TYPE", help="a union ControlNet's condition type: openpose, "
                      "depth, hed/pidi/scribble/ted, canny/lineart/anime_lineart/mlsd, normal, segment, tile, repaint (ProMax)")
    unit.add_argument("--schedule", action=UnitOption, metavar="F:S,...", help="weight over the steps: keyframes "
                      "FRACTION:FACTOR, e.g. 0:1,0.5:0.3 (the weight x 0.3 from half the steps on)")
    unit.add_argument("--schedule-interpolation", action=UnitOption, metavar="HOW", help="hold (default: each factor "
                      "holds until the next keyframe) or linear")
    p.add_argument("--prompt", default="", help="the prompt")
    p.add_argument("--negative-prompt", default="", help="the negative prompt")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the ControlNets' recommended, else 20)")
    p.add_argument("--cfg", dest="guidance_scale", type=float, default=None, help="classifier-free guidance scale (default: the "
                   "ControlNets' recommended, else 9.0; <= 1 turns CFG off)")
    p.add_argument("--scheduler", default=None, help="(default: the ControlNets' recommended, else ddim) ddim, euler, euler_a, dpmpp_2m, dpmpp_2m_karras, unipc, heun, lms, pndm, default")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta (default 0)")
    p.add_argument("--seed", type=int, default=None, help="seed of the first image, 0..4294967295; image k uses seed+k, "
                   "wrapping to 0 past the top (default random)")
    p.add_argument("--num-images", type=int, default=1, help="how many images (default 1)")
    p.add_argument("--width", type=int, help="output width, a multiple of 8 (default: from the first condition image)")
    p.add_argument("--height", type=int, help="output height, a multiple of 8")
    p.add_argument("--resize", default="crop_and_resize", help="fit condition images: crop_and_resize, just_resize, resize_and_fill, none")
    p.add_argument("--init-image", help="img2img: start from this image")
    p.add_argument("--strength", type=float, default=None, help="img2img: how much of the schedule to run (default 0.75; "
                   "1 when inpainting)")
    p.add_argument("--inpaint-mask", metavar="IMG", help="inpainting: repaint the white area of --init-image (black and white "
                   "only, the picture's size); --resize resize_and_fill outpaints the filled border")
    p.add_argument("--inpaint-mode", default="blend", help="blend (diffusers: the original latent kept outside the mask every "
                   "step) or inpaint_only (A1111: the predicted x0 kept)")
    p.add_argument("--mask-blur", type=float, default=None, metavar="SIGMA", help="paste the result onto the original through "
                   "the mask blurred with this sigma in pixels (0: hard edge; default: no paste, as diffusers)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--from", dest="from_png", metavar="PNG", help="re-create an image from the parameters stored in its PNG")
    p.add_argument("-o", "--outdir", default="outputs", help="output folder (default ./outputs)")
    p.add_argument("--no-grid", action="store_true", help="do not write the grid image")
    p.set_defaults(func=run, units=[])


# ---------------------------------------------------------------------------------------- running


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


def _unit_images(unit: dict, width, height, resize: str | None, inpaint_mask=None):
    """(condition image, mask) of one unit, read before any model is loaded so a bad file fails fast.
    `--preprocess inpaint` takes the inpainting mask (as A1111's inpaint preprocessors do)."""
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
                    **unit["preprocess_params"]), mask


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
            nets[key] = load_controlnet(u["controlnet"], dtype=pipe.unet.dtype, device=pipe.device)
        units.append(ControlUnit(nets[key], image, weight=u["weight"], start=u["start"], end=u["end"], mode=u["mode"],
                                 mask=mask, resize=resize, name=f"unit {i + 1} ({Path(u['controlnet']).name})",
                                 schedule=u["schedule"], schedule_interpolation=u["schedule_interpolation"],
                                 control_type=u.get("control_type")))
    return units


def _next_index(outdir: Path) -> int:
    taken = [int(p.name.split("-")[0]) for p in outdir.glob("*.png") if p.name.split("-")[0].isdigit()]
    return max(taken, default=-1) + 1


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


def save_outputs(out, args, outdir: Path) -> None:
    """Each image as a PNG carrying its parameters, then the grid; every file written atomically."""
    import controlnet
    from controlnet.files import save_image

    index = _next_index(outdir)
    base = parameters(args)
    base.update(width=out.images[0].width, height=out.images[0].height, num_images=1, version=controlnet.__version__)
    for k, (image, seed) in enumerate(zip(out.images, out.seeds)):
        path = outdir / f"{index + k:05d}-{seed}.png"
        save_image(image, path, pnginfo=png_info({**base, "seed": seed}))
        print(path)
    if not args.no_grid and (out.hints or len(out.images) > 1):
        path = outdir / f"grid-{index:05d}.png"
        save_image(make_grid([h for per_unit in out.hints for h in per_unit], out.images), path)
        print(path)


def run(args) -> int:
    """Parse, check the output place, read the images, load the models, sample, save. Values are
    checked by the API (ControlUnit, ControlPipeline); this only wires the options to it."""
    from controlnet.cli.generate_batch import is_batch, run_batch
    from controlnet.files import writable_folder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    if args.from_png:
        for note in replay(args, args.from_png):
            print(note, file=sys.stderr)
    elif any(u["controlnet"] is None for u in args.units):
        raise InputError("give --controlnet FILE before --image (without it, --image gives a --from replay's pictures)")
    _resolve_models(args)
    apply_recommended(args)
    outdir = writable_folder(args.outdir, "output folder (-o)", create=False)  # before minutes of sampling, not after
    if is_batch(args):  # a unit's --image is a folder: one output per picture
        return run_batch(args, outdir, Models(progress=False), sample)
    save_outputs(sample(args, Models()), args, outdir)
    return 0


class Models:
    """The base pipeline and ControlNets, loaded on first use and kept, so a batch loads them once."""

    def __init__(self, progress: bool = True):
        self.pipe, self.nets, self.progress = None, {}, progress

    def load(self, args):
        from controlnet.pipeline import ControlPipeline

        if self.pipe is None:
            self.pipe = ControlPipeline.from_pretrained(args.model, config=args.config, dtype=args.dtype, device=args.device)
        return self.pipe


def sample(args, models: Models):
    """Read this run's images (before any model is loaded, so a bad file fails fast), then sample."""
    from controlnet.pipeline.images import load_image, resize_mode

    resize = resize_mode(args.resize)
    inpaint_mask = load_image(args.inpaint_mask) if args.inpaint_mask else None
    images = [_unit_images(u, args.width, args.height, resize, inpaint_mask) for u in args.units]
    init = load_image(args.init_image) if args.init_image else None
    pipe = models.load(args)
    units = _units(args.units, images, resize, pipe, models.nets)
    out = pipe(args.prompt, units, negative_prompt=args.negative_prompt, steps=args.steps, guidance_scale=args.guidance_scale,
               scheduler=args.scheduler, eta=args.eta, seed=args.seed, num_images=args.num_images, height=args.height,
               width=args.width, init_image=init, strength=args.strength, mask_image=inpaint_mask,
               inpaint_mode=args.inpaint_mode, mask_blur=args.mask_blur, init_resize=resize, progress=models.progress)
    return out
