"""Loading a base model (SD 1.x, 2.x, XL) fully offline.

Two sources:
- a diffusers-layout folder (`model_index.json` + one subfolder per component);
- a single-file checkpoint (`.safetensors` / `.ckpt`, original LDM keys) plus a *local* config: a
  diffusers-layout folder holding at least the component configs and tokenizer files (weights not
  needed). diffusers would fetch that config from the Hub; we never download, so it must be given.

Every missing piece gets an error naming the file to provide.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import torch

from controlnet.devices import check_device
from controlnet.dtypes import parse_dtype
from controlnet.errors import CheckpointError, InputError, MissingFileError

WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")
WEIGHT_EXTS = (".safetensors", ".bin")
NEEDED = {
    "sd": ("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    "flux": ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"),
    "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer", "tokenizer_2",
            "tokenizer_3", "scheduler"),
}
# Text encoders a transformer base may leave out of model_index.json (null): T5 (diffusers' SD3 pipeline then
# feeds zeros in its place; Flux reads the CLIP's token states instead) and SD3's second CLIP. Small bases
# trained with one CLIP (the miniature ones) are such folders.
OPTIONAL = {"flux": ("text_encoder_2", "tokenizer_2"),
            "sd3": ("text_encoder_2", "tokenizer_2", "text_encoder_3", "tokenizer_3")}


def read_model_index(folder: Path) -> dict:
    index = folder / "model_index.json"
    if not index.is_file():
        raise MissingFileError(
            f"{folder} is not a diffusers base model folder: it has no model_index.json "
            "(give the folder that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/; "
            "for a single .safetensors/.ckpt file pass it with config=<such a folder>)"
        )
    try:
        return json.loads(index.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{index} is not valid JSON ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{index}: JSON nested too deeply to be a model index") from None


def base_kind(index: dict) -> str:
    """"sd" (1.x/2.x), "sdxl", "flux" or "sd3", from the pipeline class and the components present."""
    name = str(index.get("_class_name", ""))
    if "transformer" in index:
        if "Flux" not in name and "StableDiffusion3" not in name:
            raise InputError(f"{name or 'this model'} is a transformer base model; of those only Flux and SD3 are supported")
        return "flux" if "Flux" in name else "sd3"
    if "text_encoder_2" in index or "XL" in name:
        if not index.get("text_encoder") or index.get("text_encoder") == [None, None]:
            raise InputError(f"{name or 'this model'} has no first text encoder (an SDXL refiner?): only SDXL base models are supported")
        return "sdxl"
    return "sd"


def component_location(folder: Path, index: dict, name: str) -> tuple[Path, str]:
    """(root, subfolder) of a component: `folder/name`, or where `_shared_components` points: a path
    relative to the folder, or `builtin:<model>/<part>` in the package's built-in models (the built-in
    mini-dit borrows the miniature SD's autoencoder and CLIP, wherever the folder is copied)."""
    from controlnet.assets import BUILTIN_DIR

    shared = index.get("_shared_components") or {}
    if not isinstance(shared, dict) or not isinstance(shared.get(name, name), str):
        raise CheckpointError(f"{folder}/model_index.json: _shared_components must map component names to folders")
    where = shared.get(name)
    if where is None:
        path = folder / name
    elif where.startswith("builtin:"):
        path = BUILTIN_DIR / where.removeprefix("builtin:")
    else:
        path = (folder / where).resolve()
    return path.parent, path.name


def _check_component(folder: Path, name: str, index: dict) -> None:
    entry = index.get(name)
    if not entry or entry == [None, None]:
        raise MissingFileError(f"{folder}/model_index.json lists no {name}; this pipeline needs one")
    sub = Path(*component_location(folder, index, name))
    if not sub.is_dir():
        raise MissingFileError(f"{sub} is missing: the base model needs its {name} folder")
    if name.startswith("tokenizer"):
        if not ((sub / "vocab.json").is_file() and (sub / "merges.txt").is_file()) and not (sub / "tokenizer.json").is_file():
            raise MissingFileError(f"{sub} needs vocab.json and merges.txt (or tokenizer.json) of the CLIP tokenizer")
        return
    config_file = sub / ("scheduler_config.json" if name == "scheduler" else "config.json")
    if not config_file.is_file():
        raise MissingFileError(f"{config_file} is missing: copy the {name} config of the base model there")
    if name != "scheduler":
        files = [p.name for p in sub.iterdir()]
        if not any(f.startswith(WEIGHT_NAMES) and f.endswith(WEIGHT_EXTS) for f in files):
            raise MissingFileError(
                f"{sub} has no weights (expected e.g. {name}/diffusion_pytorch_model.safetensors or model.safetensors); "
                "nothing is downloaded, so the weights must be in the folder"
            )


def _class(entry, name: str):
    library, cls_name = entry
    if library == "transformers":
        import transformers

        return getattr(transformers, cls_name)
    import diffusers

    if not hasattr(diffusers, cls_name):
        raise CheckpointError(f"model_index.json names {library}.{cls_name} for {name}, which this diffusers lacks")
    return getattr(diffusers, cls_name)


def load_folder(path: str | os.PathLike, *, dtype=None, device="cpu", variant: str | None = None,
                skip: tuple[str, ...] = ()) -> dict:
    """The components of a diffusers-layout base model folder, as a dict ready for `ControlPipeline`;
    those in `skip` are neither needed nor loaded (a transformer given as its own file)."""
    folder = Path(path)
    dtype, device = parse_dtype(dtype), check_device(device)
    if not folder.exists():
        raise MissingFileError(f"base model not found: {folder}")
    index = read_model_index(folder)
    kind = base_kind(index)
    left_out = [n for n in OPTIONAL.get(kind, ()) if index.get(n) in (None, [None, None])]
    needed = [n for n in NEEDED[kind] if n not in left_out and n not in skip]
    for name in needed:
        _check_component(folder, name, index)
    parts: dict = {"kind": kind, "force_zeros_for_empty_prompt": bool(index.get("force_zeros_for_empty_prompt", kind == "sdxl"))}
    parts.update(dict.fromkeys(left_out))
    for name in needed:
        cls = _class(index[name], name)
        root, sub = component_location(folder, index, name)
        kwargs: dict = {"subfolder": sub, "local_files_only": True}
        try:
            if name.startswith("tokenizer"):
                parts[name] = cls.from_pretrained(root, **kwargs)
            elif name == "scheduler":
                parts[name] = cls.from_pretrained(root, **kwargs)
            else:
                if variant:
                    kwargs["variant"] = variant
                if dtype is not None:  # load in the dtype (casting afterwards makes diffusers warn)
                    kwargs["dtype" if index[name][0] == "transformers" else "torch_dtype"] = dtype
                parts[name] = cls.from_pretrained(root, **kwargs).to(device).eval()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load {folder / name}: {str(exc).splitlines()[0]}") from None
    return parts


class TransformerBase:
    """`from_pretrained` of the transformer bases (`SD3Base`, `FluxBase`: dataclasses of components):
    a diffusers folder whose model_index.json names the `kind` pipeline; `described` names it in errors."""

    kind: ClassVar[str]
    described: ClassVar[str]

    @classmethod
    def from_pretrained(cls, path, *, dtype=None, device="cpu", variant: str | None = None, transformer=None,
                        control_lora=None):
        """`transformer`: a weights file to use instead of the folder's (`checkpoints.dit_base`: its
        config read off its tensors; the folder's transformer weights are then not needed).
        `control_lora`: a FLUX.1 Control LoRA file merged into a plain Flux base (`checkpoints.flux_control_lora`)."""
        if control_lora is not None and cls.kind != "flux":
            raise InputError(f"a FLUX.1 Control LoRA ({control_lora}) is for Flux base models, not {cls.described}")
        kind = base_kind(read_model_index(Path(path))) if Path(path).is_dir() else None
        if kind is not None and kind != cls.kind:
            raise InputError(f"{path} is not {cls.described} (its model_index.json names another pipeline)")
        parts = load_folder(path, dtype=dtype, device=device, variant=variant,
                            skip=("transformer",) if transformer is not None else ())
        parts.pop("kind"), parts.pop("force_zeros_for_empty_prompt")
        if transformer is not None:
            from controlnet.checkpoints.dit_base import load_base_transformer

            parts["transformer"] = load_base_transformer(transformer, cls.kind, dtype=dtype, device=check_device(device))
        if control_lora is not None:
            from controlnet.checkpoints.flux_control_lora import apply_flux_control_lora

            apply_flux_control_lora(parts["transformer"], control_lora)
        return cls(**parts)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """What width and height must be multiples of: the VAE's factor times the patch (Flux packs 2×2)."""
        return self.vae_scale_factor * (2 if self.kind == "flux" else self.transformer.config.patch_size)


def single_file_kind(path: Path) -> str:
    """"sdxl" when the checkpoint has SDXL's second text encoder, else "sd"."""
    import pickle

    from safetensors import SafetensorError, safe_open

    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt") as f:
                keys = list(f.keys())
        else:
            state = torch.load(path, map_location="meta", weights_only=True)
            keys = list(state.get("state_dict", state)) if isinstance(state, dict) else []
    except pickle.UnpicklingError:
        raise CheckpointError(f"{path} cannot be read with weights_only=True: not a checkpoint, or a pickle that would "
                              "run code (never unpickled here); convert it to .safetensors") from None
    except (SafetensorError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                              "a truncated or damaged file, or not a model") from None
    return "sdxl" if any(k.startswith("conditioner.embedders.1") for k in keys) else "sd"


def load_single_file(path: str | os.PathLike, *, config: str | os.PathLike | None, dtype=None, device="cpu") -> dict:
    """Components of a single-file SD/SDXL checkpoint, configured by a local diffusers-layout folder."""
    path = Path(path)
    dtype, device = parse_dtype(dtype), check_device(device)
    if not path.is_file():
        raise MissingFileError(f"checkpoint not found: {path}")
    if config is None:
        raise MissingFileError(
            f"{path.name} is a single-file checkpoint: pass config=<a local diffusers-layout folder of the same "
            "base model> (model_index.json, component configs and tokenizer files; weights not needed), since "
            "nothing is downloaded"
        )
    config_folder = Path(config)
    index = read_model_index(config_folder)
    kind = single_file_kind(path)
    if kind != base_kind(index):
        raise InputError(f"{path.name} is an {kind} checkpoint but the config folder {config_folder} describes an {base_kind(index)} model")
    import diffusers

    cls = diffusers.StableDiffusionXLPipeline if kind == "sdxl" else diffusers.StableDiffusionPipeline
    extra = {} if kind == "sdxl" else {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    try:
        pipe = cls.from_single_file(str(path), config=str(config_folder), local_files_only=True, torch_dtype=dtype, **extra)
    except NotImplementedError as exc:  # diffusers moving a model whose weights the file lacks
        if "meta tensor" not in str(exc):
            raise
        raise CheckpointError(f"{path.name} lacks weights that the config in {config_folder} needs: a truncated file, or one "
                              "made for another model") from None
    except (OSError, ValueError, KeyError, TypeError, SingleFileComponentError) as exc:
        raise CheckpointError(f"cannot load {path} with the config in {config_folder}: {str(exc).splitlines()[0]}") from None
    parts = {name: getattr(pipe, name) for name in NEEDED[kind]}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if name in parts:
            _check_filled(parts[name], name, path, config_folder)
            parts[name] = parts[name].to(device)
    parts["kind"] = kind
    parts["force_zeros_for_empty_prompt"] = bool(index.get("force_zeros_for_empty_prompt", kind == "sdxl"))
    return parts


def _check_filled(module: torch.nn.Module, name: str, path: Path, config_folder: Path) -> None:
    """diffusers builds single-file models on the meta device and does not complain about keys the
    file lacks; those weights would stay empty and fail later with an unrelated message."""
    empty = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if empty:
        raise CheckpointError(f"{path.name} lacks {len(empty)} {name} weights (e.g. {empty[0]}) that the config in "
                              f"{config_folder} needs: a truncated file, or one made for another model")
