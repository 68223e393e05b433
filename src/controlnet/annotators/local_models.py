"""Loading learned annotators from local files only: transformers folders and published .pth files.

Nothing here reaches a hub: folders load with `local_files_only=True`, single files with
`torch.load(weights_only=True)` or safetensors, so no pickle code ever runs. Loaded models are
cached per path and modification time, so a batch of images loads them once.

The models folder: one folder holds every detector's weights, given by a flag (`--models-dir`,
`--annotator-dir`) or else by $CONTROLNET_ANNOTATOR_DIR. A file is found there flat
(`DIR/ControlNetHED.pth`) or in sd-webui-controlnet's layout (`DIR/hed/ControlNetHED.pth` when DIR is
its `annotator/downloads`, or DIR its extension folder or A1111's root); a missing one is named in one
line with where to put it and where it is published.

The device: `on_device(device)` puts every network loaded inside it on that device (cached per device);
each detector moves its input to its network's device (`device_of`) and brings the output back as numpy.
A context rather than a parameter, so the device reaches the loaders without passing through every
detector's signature.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from pathlib import Path

from controlnet.errors import InputError, MissingFileError

ENV_VAR = "CONTROLNET_ANNOTATOR_DIR"
ANNOTATORS = "huggingface.co/lllyasviel/Annotators"
LLLITE = "huggingface.co/bdsqlsz/qinglong_controlnet-lllite (Annotators/)"
# the folders above sd-webui-controlnet's downloads/<name>/, from the models folder given
A1111_DOWNLOADS = ("", "annotator/downloads", "extensions/sd-webui-controlnet/annotator/downloads")
# published file (or transformers folder) -> (its sd-webui-controlnet downloads/<name>, where it is published)
PUBLISHED = {
    "ControlNetHED.pth": ("hed", ANNOTATORS),
    "sk_model.pth": ("lineart", ANNOTATORS),
    "sk_model2.pth": ("lineart", ANNOTATORS),
    "table5_pidinet.pth": ("pidinet", ANNOTATORS),
    "mlsd_large_512_fp32.pth": ("mlsd", ANNOTATORS),
    "mlsd_tiny_512_fp32.pth": ("mlsd", ANNOTATORS),
    "body_pose_model.pth": ("openpose", ANNOTATORS),
    "hand_pose_model.pth": ("openpose", ANNOTATORS),
    "facenet.pth": ("openpose", ANNOTATORS),
    "yolox_l.onnx": ("openpose", "huggingface.co/yzd-v/DWPose"),
    "dw-ll_ucoco_384.onnx": ("openpose", "huggingface.co/yzd-v/DWPose"),
    "dpt_hybrid-midas-501f0c75.pt": ("midas", ANNOTATORS),
    "res101.pth": ("leres", ANNOTATORS),
    "latest_net_G.pth": ("leres", ANNOTATORS),
    "ZoeD_M12_N.pt": ("zoedepth", ANNOTATORS),
    "depth_anything_v2_vits.pth": ("depth_anything_v2", "huggingface.co/depth-anything/Depth-Anything-V2-Small "
                                   "(Apache-2.0; Base and Large are CC-BY-NC-4.0)"),
    "depth_anything_v2_vitb.pth": ("depth_anything_v2", "huggingface.co/depth-anything/Depth-Anything-V2-Base (CC-BY-NC-4.0)"),
    "depth_anything_v2_vitl.pth": ("depth_anything_v2", "huggingface.co/depth-anything/Depth-Anything-V2-Large (CC-BY-NC-4.0)"),
    "depth_anything_v2_vitl.safetensors": ("depth_anything_v2", "huggingface.co/MackinationsAi/Depth-Anything-V2_Safetensors "
                                           "(CC-BY-NC-4.0)"),
    "scannet.pt": ("normal_bae", ANNOTATORS),
    "netG.pth": ("lineart_anime", ANNOTATORS),
    "erika.pth": ("manga_line", ANNOTATORS),
    "7_model.pth": ("TEED", LLLITE),
    "MTEED.pth": ("TEED", "huggingface.co/TheMistoAI/MistoLine (Anyline/)"),
    "250_16_swin_l_oneformer_ade20k_160k.pth": ("oneformer", ANNOTATORS),
    "150_16_swin_l_oneformer_coco_100ep.pth": ("oneformer", ANNOTATORS),
    "upernet_global_small.pth": ("uniformer", f"{ANNOTATORS} (or give a transformers UperNet ADE20K folder, "
                                              "named seg_ufade20k in the models folder)"),
    # transformers folders (saved with save_pretrained), under these names in the models folder
    "depth": ("", "huggingface.co/Intel/dpt-hybrid-midas or depth-anything/Depth-Anything-V2-Small-hf "
                  "(a transformers folder; of Depth Anything V2 only Small is Apache-2.0)"),
    "seg_ade20k": ("", "huggingface.co/openmmlab/upernet-convnext-small or shi-labs/oneformer_ade20k_swin_tiny "
                       "(a transformers ADE20K folder)"),
    "seg_ofade20k": ("", "huggingface.co/shi-labs/oneformer_ade20k_swin_large (transformers' conversion of "
                         "250_16_swin_l_oneformer_ade20k_160k.pth, the file A1111 reads)"),
    "seg_ofcoco": ("", "huggingface.co/shi-labs/oneformer_coco_swin_large (transformers' conversion of "
                       "150_16_swin_l_oneformer_coco_100ep.pth, the file A1111 reads)"),
    "seg_ufade20k": ("", "huggingface.co/openmmlab/upernet-convnext-small or upernet-swin-small (a transformers "
                         "UperNet ADE20K folder; A1111's own file is upernet_global_small.pth)"),
}
# a published file -> models-folder entries that serve instead when it is absent
INSTEAD = {"upernet_global_small.pth": ("seg_ufade20k",)}

_DEVICE = contextvars.ContextVar("controlnet_annotator_device", default="cpu")

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


@contextlib.contextmanager
def on_device(device):
    """Run the learned detectors called inside on `device` ("cpu", "cuda:1", ...; one this machine has, else an
    InputError); None keeps the current one (the CPU unless an outer `on_device` says otherwise)."""
    from controlnet.devices import check_device

    token = _DEVICE.set(str(check_device(device))) if device is not None else None
    try:
        yield
    finally:
        if token is not None:
            _DEVICE.reset(token)


def detector_device() -> str:
    """The device networks are loaded onto now (see `on_device`)."""
    return _DEVICE.get()


def device_of(net):
    """Where `net`'s parameters are: its input goes there."""
    return next(net.parameters()).device


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


def load_transformers_model(folder, auto_class: str, what: str, example: str, processor_class: str = "AutoImageProcessor"):
    """(model, processor) from a local folder, in eval mode, cached; OneFormer's processor also holds
    the tokenizer that encodes its task ("the task is semantic")."""
    path = check_model_folder(folder, what, example)
    return _load_transformers(str(path), _stamp(path), auto_class, what, example, processor_class, detector_device())


@functools.lru_cache(maxsize=2)
def _load_transformers(path: str, _mtime: float, auto_class: str, what: str, example: str, processor_class: str,
                       device: str):
    import transformers

    loader = getattr(transformers, auto_class)
    try:
        model = loader.from_pretrained(path, local_files_only=True)
    except ValueError as exc:  # e.g. "Unrecognized configuration class" for a model of another task
        raise InputError(f"{path} does not hold a {what} model ({str(exc).splitlines()[0]}); give e.g. {example}") from exc
    except OSError as exc:
        raise InputError(f"cannot load the {what} model in {path}: {str(exc).splitlines()[0]}") from exc
    kwargs = {"backend": "pil"} if int(transformers.__version__.split(".")[0]) >= 5 else {}
    files = "preprocessor_config.json"
    if processor_class == "OneFormerProcessor":  # its class names would come from the hub; semantic maps need none
        kwargs["class_info_file"] = None
        files = "preprocessor_config.json and tokenizer files (vocab.json, merges.txt)"
        if not any((Path(path) / name).is_file() for name in ("tokenizer.json", "vocab.json")):
            # transformers would build an empty tokenizer and encode the task as unknown tokens
            raise MissingFileError(f"{path} has no tokenizer files (vocab.json, merges.txt); copy them from {example}")
    try:  # torchvision has no CPU wheel here: ask for the PIL backend outright
        processor = getattr(transformers, processor_class).from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise MissingFileError(f"{path} has no usable {files} ({str(exc).splitlines()[0]}); copy them from {example}") from exc
    return model.to(device).eval(), processor


def numpy_values() -> list:
    """What `torch.load(weights_only=True)` may also rebuild: numpy scalars, arrays and dtypes, which training
    checkpoints keep beside their tensors (mmcv's `meta` of upernet_global_small.pth: a best score, the config's
    values). They are rebuilt from plain data, no code runs; numpy 1's names too, for files saved before numpy 2."""
    import numpy as np

    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    dtypes = getattr(np, "dtypes", None)  # each dtype's own class, which a rebuilt dtype is checked against
    classes = [getattr(dtypes, name) for name in dir(dtypes) if name.endswith("DType")] if dtypes else []
    return [np.dtype, np.ndarray, core.scalar, core._reconstruct, *classes,
            (core.scalar, "numpy.core.multiarray.scalar"), (core._reconstruct, "numpy.core.multiarray._reconstruct")]


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
            with torch.serialization.safe_globals(numpy_values()):
                state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(
            f"{path} holds more than plain tensors, and is not unpickled for safety "
            f"(torch.load weights_only=True): {str(exc).splitlines()[0]}"
        ) from exc
    except Exception as exc:  # corrupt or truncated files come in many exception types
        raise InputError(f"cannot read weights from {path}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
    # PiDiNet nests its tensors under "state_dict", NormalBAE and ZoeDepth under "model", LeReS's res101.pth under
    # "depth_model" (whatever else that checkpoint holds beside it is not read)
    for wrapper in ("state_dict", "model", "depth_model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def models_dir(given=None) -> Path | None:
    """The models folder: `given` (the --models-dir / --annotator-dir flag) wins over $CONTROLNET_ANNOTATOR_DIR;
    None when neither is set."""
    source, value = ("--models-dir/--annotator-dir", given) if given not in (None, "") else (f"${ENV_VAR}", os.environ.get(ENV_VAR))
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise MissingFileError(f"{source} {path} is not a folder (give the folder that holds the detectors' weights)")
    return path.resolve()


def find_weight(name: str, folder) -> Path | None:
    """`name` (a published file or a transformers folder) in `folder`: flat, or in sd-webui-controlnet's
    downloads/<name>/ layout (`folder` being that downloads folder, the extension's or A1111's root); else
    an entry that serves instead (INSTEAD)."""
    folder = Path(folder).expanduser()
    sub = PUBLISHED.get(name, ("",))[0]
    places = [folder / name] + [folder / above / sub / name for above in A1111_DOWNLOADS if sub]
    found = next((p.resolve() for p in places if p.exists()), None)
    for other in INSTEAD.get(name, ()) if found is None else ():
        found = found or find_weight(other, folder)
    return found


def missing_weight(name: str, what: str, folder=None) -> str:
    """One line: which file `what` needs, where to put it, where it is published."""
    sub, where = PUBLISHED.get(name, ("", ANNOTATORS))
    place = str(folder) if folder else f"a folder given by --models-dir DIR (Python: models_dir=) or ${ENV_VAR}"
    layout = f" (or its {sub}/ subfolder, as sd-webui-controlnet's annotator/downloads)" if sub else ""
    thing = name if "." in name else f"a transformers folder named {name}"
    return f"{what} needs {thing}: put it in {place}{layout}; it is published at {where}; nothing is downloaded"


def weight_path(name: str, what: str, folder=None) -> Path:
    """`name` in the models folder (`folder`, else $CONTROLNET_ANNOTATOR_DIR), or a MissingFileError saying where to put it."""
    folder = models_dir(folder)
    found = find_weight(name, folder) if folder is not None else None
    if found is None:
        raise MissingFileError(missing_weight(name, what, folder))
    return found


def resolve_weight_file(given, default_name: str, what: str) -> Path:
    """A file path, or a folder holding the published file name (flat as lllyasviel/Annotators, or in
    sd-webui-controlnet's downloads/<name>/ layout); None: the models folder of $CONTROLNET_ANNOTATOR_DIR."""
    if given is None:
        return weight_path(default_name, what)
    path = Path(given).expanduser()
    if path.is_dir():
        found = find_weight(default_name, path)
        if found is None or not found.is_file():
            raise MissingFileError("weights not found: " + missing_weight(default_name, what, path))
        return found
    if not path.is_file():
        raise MissingFileError(
            f"{what} weights not found at {path}; download {default_name} ({PUBLISHED.get(default_name, ('', ANNOTATORS))[1]}) "
            f"yourself and pass its path, or the folder holding it"
        )
    return path.resolve()


def build_uninitialised(make):
    """`make()` built on the meta device, then given uninitialised CPU memory: `load_network` loads every
    tensor strictly (or refuses the file), so the random initialisation, seconds for 50M parameters, is skipped."""
    import torch

    with torch.device("meta"):
        net = make()
    return net.to_empty(device="cpu")


def load_network(given, default_name: str, what: str, build, fold_batch_norms: bool = False):
    """Build a torch module and load a published weight file into it strictly, on the detectors' device; cached.
    `fold_batch_norms`: see `folded_batch_norms`."""
    path = resolve_weight_file(given, default_name, what)
    return _load_network(str(path), path.stat().st_mtime, what, build, detector_device(), fold_batch_norms)


@functools.lru_cache(maxsize=4)
def _load_network(path: str, _mtime: float, what: str, build, device: str, fold_batch_norms: bool):
    net = load_strictly(build(), load_state_dict_file(path), path, what)
    return (folded_batch_norms(net) if fold_batch_norms else net).to(device)


def folded_batch_norms(net):
    """`net` (in eval mode) with each BatchNorm2d that follows a Conv2d in a Sequential folded into that
    convolution's weight and bias: the same function in one op instead of two, for networks made of
    conv-BN-activation blocks (M-LSD: ~9% less CPU time). Subclasses (LeReS's batch-statistics norm) stay."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for block in net.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and type(block[i + 1]) is nn.BatchNorm2d:
                    block[i], block[i + 1] = fuse_conv_bn_eval(block[i], block[i + 1]), nn.Identity()
    return net


def load_converted_network(given, default_name: str, what: str, convert):
    """As load_network, for files in another layout than the module's: `convert(state, what, path)` gives
    (a module built for those tensors, possibly on the meta device; the state renamed for it); cached."""
    path = resolve_weight_file(given, default_name, what)
    return _load_converted(str(path), path.stat().st_mtime, what, convert, detector_device())


@functools.lru_cache(maxsize=2)
def _load_converted(path: str, _mtime: float, what: str, convert, device: str):
    net, state = convert(load_state_dict_file(path), what, path)
    return load_strictly(net, state, path, what, assign=True).to(device)


def load_strictly(net, state: dict, path: str, what: str, assign: bool = False):
    """`state` into `net`, every tensor or an InputError naming what is missing or extra; in eval mode."""
    try:
        result = net.load_state_dict(state, strict=False, assign=assign)
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
