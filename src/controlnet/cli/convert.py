"""`controlnet convert SRC DST --to diffusers|original [--dtype fp16]`."""

from __future__ import annotations

from pathlib import Path

from controlnet.errors import InputError


def run(args) -> int:
    from controlnet.checkpoints import load_controlnet, save_controlnet

    src, dst = Path(args.src), Path(args.dst)
    if dst.exists() and not args.overwrite:
        raise InputError(f"{dst} exists; pass --overwrite to replace it")
    if dst.resolve() == src.resolve():
        raise InputError("SRC and DST are the same path; write the conversion elsewhere")
    if args.to == "original" and dst.suffix not in (".safetensors", ".pth", ".ckpt"):
        raise InputError(f"the original layout is a single file: give DST a .safetensors or .pth suffix (got {dst})")
    cn = load_controlnet(src, config=args.config)
    out = save_controlnet(cn, dst, layout=args.to, dtype=args.dtype)
    print(f"wrote {out} ({args.to} layout{', ' + args.dtype if args.dtype else ''})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a ControlNet between the original and diffusers layouts")
    p.add_argument("src", help="any ControlNet checkpoint file or diffusers folder")
    p.add_argument("dst", help="a folder or .safetensors (diffusers), a .safetensors or .pth (original)")
    p.add_argument("--to", choices=("diffusers", "original"), required=True)
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None, help="cast floating tensors")
    p.add_argument("--config", default=None, help="config.json or cldm_*.yaml overriding the inferred architecture")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
