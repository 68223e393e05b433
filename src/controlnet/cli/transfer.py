"""`controlnet transfer`: a ControlNet moved onto a community fine-tune (paper §4.5)."""

from __future__ import annotations

from pathlib import Path

from controlnet.errors import InputError


def run(args) -> int:
    from controlnet.checkpoints import load_controlnet, read_unet_encoder, save_controlnet, transfer_control

    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} exists; pass --overwrite to replace it")
    cn = load_controlnet(args.control, config=args.config)
    base = read_unet_encoder(args.base)
    community = read_unet_encoder(args.community)
    cn, moved = transfer_control(cn, base, community)
    layout = args.layout or ("original" if out.suffix in (".pth", ".ckpt") else "diffusers")
    save_controlnet(cn, out, layout=layout, dtype=args.dtype)
    print(f"moved {moved} tensors by (community - base); wrote {out}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("transfer", help="add (community - base) to a ControlNet's copied weights")
    p.add_argument("--control", required=True, help="the ControlNet trained on BASE")
    p.add_argument("--base", required=True, help="the base SD model (diffusers folder or single-file checkpoint)")
    p.add_argument("--community", required=True, help="the fine-tune of BASE to move the ControlNet to")
    p.add_argument("-o", "--output", required=True, help="output file or folder")
    p.add_argument("--layout", choices=("diffusers", "original"), default=None)
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default=None)
    p.add_argument("--config", default=None, help="config overriding the ControlNet's inferred architecture")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)
