"""`controlnet convert SRC DST --to diffusers|original [--dtype fp16]`."""

from __future__ import annotations


def run(args) -> int:
    from controlnet.checkpoints import convert_controlnet

    out = convert_controlnet(args.src, args.dst, layout=args.to, dtype=args.dtype, config=args.config,
                             overwrite=args.overwrite, base=args.base)
    print(f"wrote {out} ({args.to} layout{', ' + args.dtype if args.dtype else ''})")
    return 0


def register(sub) -> None:
    p = sub.add_parser("convert", help="convert a ControlNet between the original and diffusers layouts")
    p.add_argument("src", help="any ControlNet checkpoint file or diffusers folder")
    p.add_argument("dst", help="a folder or .safetensors (diffusers), a .safetensors or .pth (original)")
    p.add_argument("--to", choices=("diffusers", "original"), required=True)
    p.add_argument("--dtype", default=None, help="cast floating tensors: fp32, fp16 or bf16 (default: as stored)")
    p.add_argument("--config", default=None, help="config.json or cldm_*.yaml overriding the inferred architecture")
    p.add_argument("--base", default=None, help="for a Control-LoRA: the diffusers base model folder it was made for "
                   "(the output is a plain ControlNet)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
