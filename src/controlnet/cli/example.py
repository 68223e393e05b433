"""`controlnet example OUT`: write a small random ControlNet checkpoint to try the other commands on.

Until the built-in miniature model is trained, this is the quickest way to see `inspect` and
`convert` work on a fresh machine.
"""

from __future__ import annotations

from pathlib import Path

from controlnet.errors import InputError

FAMILIES = ("sd1", "sd2", "sdxl")  # controlnet.tiny.FAMILIES, without importing diffusers for --help


def run(args) -> int:
    from controlnet.checkpoints import save_controlnet
    from controlnet.nn import ControlNet
    from controlnet.tiny import tiny_unet

    out = _check_output(Path(args.output), args.layout, args.overwrite)
    cn = ControlNet.from_unet(tiny_unet(args.family, exact=True), vae_scale_factor=8)
    save_controlnet(cn, out, layout=args.layout)
    print(f"wrote a tiny {args.family}-shaped ControlNet ({args.layout} layout) to {out}")
    return 0


FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt", ".bin")


def _check_output(out: Path, layout: str, overwrite: bool) -> Path:
    """Before building anything: `out` can be written, as a file (a checkpoint suffix) or, for the
    diffusers layout without a suffix, as a folder."""
    from controlnet.files import writable_file, writable_folder

    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    if out.suffix.lower() in FILE_SUFFIXES:
        return writable_file(out, what="the checkpoint")
    if layout == "original":
        raise InputError(f"{out}: the original layout is one file; give a .safetensors or .pth name (or --layout diffusers)")
    if out.is_file():
        raise InputError(f"{out} is a file but the diffusers layout is a folder; give a folder name")
    writable_folder(out.parent if str(out.parent) else ".", f"the folder of {out}")
    return out


def register(sub) -> None:
    p = sub.add_parser("example", help="write a tiny random ControlNet checkpoint (for trying the commands)")
    p.add_argument("output", help="a .safetensors/.pth file, or a folder for the diffusers layout")
    p.add_argument("--family", choices=FAMILIES, default="sd1")
    p.add_argument("--layout", choices=("original", "diffusers"), default="original")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
