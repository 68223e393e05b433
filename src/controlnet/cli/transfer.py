"""`controlnet transfer`: a ControlNet moved onto a community fine-tune (paper §4.5)."""

from __future__ import annotations


def run(args) -> int:
    from controlnet.checkpoints import transfer_controlnet

    out, moved = transfer_controlnet(args.control, args.base, args.community, args.output, layout=args.layout,
                                     dtype=args.dtype, config=args.config, overwrite=args.overwrite)
    print(f"moved {moved} tensors by (community - base); wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("transfer", help="add (community - base) to a ControlNet's copied weights")
    p.add_argument("--control", required=True, help="the ControlNet trained on BASE")
    p.add_argument("--base", required=True, help="the base SD model (diffusers folder or single-file checkpoint)")
    p.add_argument("--community", required=True, help="the fine-tune of BASE to move the ControlNet to")
    p.add_argument("-o", "--output", required=True, help="output file or folder")
    p.add_argument("--layout", choices=("diffusers", "original"), default=None)
    p.add_argument("--dtype", default=None, help="fp32, fp16 or bf16 (default: as the ControlNet is stored)")
    p.add_argument("--config", default=None, help="config overriding the ControlNet's inferred architecture")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
