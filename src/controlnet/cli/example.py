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

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    cn = ControlNet.from_unet(tiny_unet(args.family, exact=True), vae_scale_factor=8)
    save_controlnet(cn, out, layout=args.layout)
    print(f"wrote a tiny {args.family}-shaped ControlNet ({args.layout} layout) to {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("example", help="write a tiny random ControlNet checkpoint (for trying the commands)")
    p.add_argument("output", help="a .safetensors/.pth file, or a folder for the diffusers layout")
    p.add_argument("--family", choices=FAMILIES, default="sd1")
    p.add_argument("--layout", choices=("original", "diffusers"), default="original")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
