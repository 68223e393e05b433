"""Loading learned annotators from local files only: transformers folders and published .pth files.

Nothing here reaches a hub: folders load with `local_files_only=True`, single files with
`torch.load(weights_only=True)` or safetensors, so no pickle code ever runs. Loaded models are
cached per path and modification time, so a batch of images loads them once.
"""

from __future__ import annotations

import functools
from pathlib import Path

from controlnet.errors import InputError, MissingFileError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def check_model_folder(folder, what: str, example: str) -> Path:
    """A transformers folder must hold config.json and weights; say exactly what is missing."""
    path = Path(folder).expanduser()
    how = (
        f"give a local folder saved with `save_pretrained` (config.json, model.safetensors, "
        f"preprocessor_config.json), e.g. a copy of {example}; nothing is downloaded"
    )
    if not path.exists():
        raise MissingFileError(f"{what} model folder not found: {path}; {how}")
    if not path.is_dir():
        raise InputError(f"{what} model must be a folder, {path} is a file; {how}")
    if not (path / "config.json").is_file():
        raise MissingFileError(f"{path} has no config.json, so it is not a transformers model folder; {how}")
    if not any((path / name).is_file() for name in WEIGHT_FILES):
        raise MissingFileError(f"{path} has config.json but no weights ({' or '.join(WEIGHT_FILES[:2])}); {how}")
    return path.resolve()


def _stamp(path: Path) -> float:
    return (path / "config.json").stat().st_mtime if path.is_dir() else path.stat().st_mtime


def load_transformers_model(folder, auto_class: str, what: str, example: str):
    """(model, image processor) from a local folder, in eval mode, cached."""
    path = check_model_folder(folder, what, example)
    return _load_transformers(str(path), _stamp(path), auto_class, what, example)


@functools.lru_cache(maxsize=2)
def _load_transformers(path: str, _mtime: float, auto_class: str, what: str, example: str):
    import transformers

    loader = getattr(transformers, auto_class)
    try:
        model = loader.from_pretrained(path, local_files_only=True)
    except ValueError as exc:  # e.g. "Unrecognized configuration class" for a model of another task
        raise InputError(f"{path} does not hold a {what} model ({str(exc).splitlines()[0]}); give e.g. {example}") from exc
    except OSError as exc:
        raise InputError(f"cannot load the {what} model in {path}: {str(exc).splitlines()[0]}") from exc
    kwargs = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {}
    try:  # torchvision has no CPU wheel here: ask for the PIL backend outright
        processor = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise MissingFileError(
            f"{path} has no usable preprocessor_config.json ({str(exc).splitlines()[0]}); copy it from {example}"
        ) from exc
    return model.eval(), processor


def load_state_dict_file(file) -> dict:
    """Tensors from a .pth/.pt/.bin (weights_only) or .safetensors file; DataParallel prefixes removed."""
    import pickle

    import torch

    path = Path(file).expanduser()
    if not path.is_file():
        raise MissingFileError(f"weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path} holds more than plain tensors, and is not unpickled for safety "
            f"(torch.load weights_only=True): {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # corrupt or truncated files come in many exception types
        raise InputError(f"cannot read weights from {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def resolve_weight_file(given, default_name: str, what: str) -> Path:
    """A file path, or a folder holding the published file name (as lllyasviel/Annotators lays out)."""
    path = Path(given).expanduser()
    if path.is_dir():
        path = path / default_name
    if not path.is_file():
        raise MissingFileError(
            f"{what} weights not found at {path}; download {default_name} (lllyasviel/Annotators) "
            f"yourself and pass its path, or the folder holding it"
        )
    return path.resolve()


def load_network(given, default_name: str, what: str, build):
    """Build a torch module and load a published weight file into it strictly; cached."""
    path = resolve_weight_file(given, default_name, what)
    return _load_network(str(path), path.stat().st_mtime, what, build)


@functools.lru_cache(maxsize=4)
def _load_network(path: str, _mtime: float, what: str, build):
    net = build()
    state = load_state_dict_file(path)
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        reason = " ".join(str(exc).split())[:300]
        raise InputError(f"{path} is not a {what} weight file: {reason}") from exc
    if result.missing_keys or result.unexpected_keys:
        missing = ", ".join(result.missing_keys[:3]) or "none"
        unexpected = ", ".join(result.unexpected_keys[:3]) or "none"
        raise InputError(
            f"{path} is not a {what} weight file: missing {len(result.missing_keys)} keys ({missing}), "
            f"unexpected {len(result.unexpected_keys)} ({unexpected})"
        )
    return net.float().eval()
