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
from dataclasses import fields

from controlnet.cli import quiet_libraries
from controlnet.cli.evaluate import add_approx_options, approx_options
from controlnet.generation import Job
from controlnet.parameters import UNIT_DEFAULTS, UNIT_IMAGES


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
    p.add_argument("--model", help="base model: a diffusers folder (model_index.json; SD 1.x/2.x/XL, Flux or SD3), a single "
                   ".safetensors/.ckpt file, or mini (built in)")
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
    p.add_argument("--cfg", "--guidance-scale", dest="guidance_scale", type=float, default=None, help="classifier-free "
                   "guidance scale (default: the ControlNets' recommended, else 9.0; <= 1 turns CFG off); a Flux base: its "
                   "embedded guidance (default 3.5); SD3: CFG (default 7.0)")
    p.add_argument("--true-cfg", type=float, default=None, help="a Flux base: true classifier-free guidance against "
                   "--negative-prompt at this scale (> 1 turns it on; two forwards per step)")
    p.add_argument("--control-image", metavar="IMG", help="the hint of a FLUX.1 Control base (Canny/Depth dev: an edge or "
                   "depth map, e.g. from controlnet annotate), fitted by --resize")
    p.add_argument("--control-lora", metavar="FILE", help="a FLUX.1 Control LoRA (Canny/Depth dev -lora, BFL or diffusers "
                   "layout) applied to the plain Flux base of --model; give its hint with --control-image")
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
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net and ControlNets (CUDA: CUDA graphs); "
                   "pays a warm-up of tens of seconds per new size; see docs/performance.md")
    add_approx_options(p)
    p.add_argument("--from", dest="from_png", metavar="PNG", help="re-create an image from the parameters stored in its PNG")
    p.add_argument("-o", "--outdir", default="outputs", help="output folder (default ./outputs)")
    p.add_argument("--no-grid", action="store_true", help="do not write the grid image")
    p.set_defaults(func=run, units=[])


# ---------------------------------------------------------------------------------------- running


def job_of(args) -> Job:
    """The parsed options as the job `controlnet.generation` runs."""
    return Job(**{f.name: getattr(args, f.name) for f in fields(Job) if f.name != "approx"}, approx=approx_options(args))


def run(args) -> int:
    """Prepare the job, then sample and save (one picture, or a batch over folders); the work is in
    `controlnet.generation`, the values are checked by the API (ControlUnit, ControlPipeline)."""
    from controlnet.cli.generate_batch import run_batch
    from controlnet.generation import Models, is_batch, prepare, sample, save_outputs

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    job = job_of(args)
    outdir = prepare(job, warn=lambda note: print(note, file=sys.stderr))
    if is_batch(job):  # a unit's --image is a folder: one output per picture
        return run_batch(job, outdir)
    models = Models()
    for path in save_outputs(sample(job, models), job, outdir):
        print(path)
    if job.compile and getattr(models.pipe, "compiled", None) is not None:
        print(models.pipe.compiled.summary(), file=sys.stderr)
    return 0
