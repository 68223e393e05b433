"""`convert` and `transfer` as library calls: every input checked before the (long) work, the
output written atomically, the stored dtype kept unless another is asked for."""

from __future__ import annotations

import os
from pathlib import Path

from controlnet import checks
from controlnet.checkpoints.dit import DIT_CLASSES, save_dit_controlnet
from controlnet.checkpoints.load import load_controlnet
from controlnet.checkpoints.save import output_kind, save_controlnet
from controlnet.checkpoints.transfer import read_unet_encoder, transfer_control
from controlnet.dtypes import parse_dtype
from controlnet.errors import InputError
from controlnet.files import writable_folder

PathLike = str | os.PathLike


def check_output(dst: PathLike, layout: str, overwrite: bool) -> Path:
    """Fail now, not after loading, when `dst` cannot receive a ControlNet in `layout`."""
    dst = checks.path("output", dst)
    if dst.exists() and not overwrite:
        raise InputError(f"{dst} exists; pass --overwrite (overwrite=True) to replace it")
    kind = output_kind(dst, layout)
    writable_folder(dst if kind == "folder" and dst.is_dir() else dst.parent, f"the folder of {dst}")
    return dst


def convert_controlnet(src: PathLike, dst: PathLike, *, layout: str, dtype=None, config=None,
                       overwrite: bool = False, base=None) -> Path:
    """Any ControlNet checkpoint `src` written at `dst` in `layout` ("diffusers" or "original"); a
    Control-LoRA needs its `base` model (folder or U-Net) and comes out as a plain ControlNet."""
    src, target = Path(src), parse_dtype(dtype)
    dst = check_output(dst, layout, overwrite)
    if dst.exists() and dst.resolve() == src.resolve():
        raise InputError(f"SRC and DST are the same path ({src}); write the conversion elsewhere")
    cn = load_controlnet(src, config=config, base=base)
    if base is not None and cn.loaded_from["layout"] != "control-lora":
        raise InputError(f"{src}: a base model (--base) is for a Control-LoRA; this {cn.loaded_from['layout']} file "
                         "carries all its weights: leave --base out")
    save = save_dit_controlnet if isinstance(cn, DIT_CLASSES) else save_controlnet
    return save(cn, dst, layout=layout, dtype=target or cn.loaded_from["dtype"])


def transfer_controlnet(control: PathLike, base: PathLike, community: PathLike, output: PathLike, *,
                        layout: str | None = None, dtype=None, config=None, overwrite: bool = False) -> tuple[Path, int]:
    """The ControlNet `control` (trained on `base`) moved onto `community`, written at `output`;
    returns (output, number of tensors moved). Layout: original for .pth/.ckpt, else diffusers."""
    output, target = checks.path("output", output), parse_dtype(dtype)
    layout = layout or ("original" if output.suffix in (".pth", ".ckpt") else "diffusers")
    check_output(output, layout, overwrite)
    cn = load_controlnet(control, config=config)
    cn, moved = transfer_control(cn, read_unet_encoder(base), read_unet_encoder(community))
    return save_controlnet(cn, output, layout=layout, dtype=target or cn.loaded_from["dtype"]), moved
