"""Running a published ONNX file: OpenCV's DNN module by default (as sd-webui-controlnet runs DWPose, so no
extra package is needed), onnxruntime when asked (`pip install 'controlnet-pytorch[dwpose]'`).

ONNX files are protobuf graphs, not pickles: reading one runs no code. A file that is not ONNX, is cut
short, or has other outputs than the detector expects is refused in one line. Some newer exports hold a
TopK layer that older OpenCV releases cannot run: then onnxruntime is used when it is installed, and
otherwise the error says so.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controlnet.errors import InputError

from .local_models import detector_device

BACKENDS = ("opencv", "onnxruntime")
INSTALL_ORT = "pip install onnxruntime (the dwpose extra)"


@dataclass
class OnnxNet:
    """One loaded file: `run(x)` -> its outputs in the graph's output order."""

    path: str
    backend: str
    session: object
    output_names: tuple[str, ...]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.backend == "onnxruntime":
            name = self.session.get_inputs()[0].name
            return list(self.session.run(list(self.output_names), {name: x}))
        self.session.setInput(x)
        return list(self.session.forward(list(self.output_names)))


def has_topk(path) -> bool:
    """Whether the graph holds a TopK node (its op type is stored as plain text in the protobuf)."""
    return b"TopK" in Path(path).read_bytes()


def onnxruntime_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def load_onnx(path, what: str, outputs: int, backend: str = "opencv") -> OnnxNet:
    """`path` loaded with `backend`, checked to have `outputs` outputs; cached per path and modification time."""
    if backend not in BACKENDS:
        raise InputError(f"ONNX backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    path = Path(path)
    return _load(str(path), path.stat().st_mtime, what, outputs, backend, detector_device())


@functools.lru_cache(maxsize=4)
def _load(path: str, _mtime: float, what: str, outputs: int, backend: str, device: str) -> OnnxNet:
    net = _open_onnxruntime(path, what, device) if backend == "onnxruntime" else _open_opencv(path, what, device)
    if len(net.output_names) != outputs:
        raise InputError(f"{path} is not a {what} file: it has {len(net.output_names)} outputs "
                         f"({', '.join(net.output_names)}) where {outputs} are expected")
    return net


def _open_opencv(path: str, what: str, device: str) -> OnnxNet:
    """OpenCV's DNN module on the CPU whatever the device, as A1111 runs DWPose (pip's OpenCV has no CUDA)."""
    import cv2

    try:
        net = cv2.dnn.readNetFromONNX(path)
        names = tuple(net.getUnconnectedOutLayersNames())
    except cv2.error as exc:
        if has_topk(path):
            if onnxruntime_installed():
                return _open_onnxruntime(path, what, device)
            raise InputError(f"OpenCV {cv2.__version__} cannot run {path}: this {what} export has a TopK layer "
                             f"(newer exports do); {INSTALL_ORT}, or use the file published by the original project") from exc
        raise InputError(f"cannot read the {what} from {path}: not an ONNX file, or cut short "
                         f"({_first_line(exc)})") from exc
    return OnnxNet(path, "opencv", net, names)


def _open_onnxruntime(path: str, what: str, device: str) -> OnnxNet:
    if not onnxruntime_installed():
        raise InputError(f"the onnxruntime backend needs onnxruntime: {INSTALL_ORT}")
    import onnxruntime as ort

    providers = _providers(device, ort.get_available_providers())
    try:
        session = ort.InferenceSession(path, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for corrupt graphs
        raise InputError(f"cannot read the {what} from {path}: not an ONNX file, or cut short "
                         f"({_first_line(exc)})") from exc
    return OnnxNet(path, "onnxruntime", session, tuple(o.name for o in session.get_outputs()))


def _providers(device: str, available) -> list:
    """onnxruntime's execution providers for a torch device name: CUDA's on cuda[:N] (onnxruntime-gpu), else the CPU's."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        raise InputError(f"device {device}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu), "
                         "or run DWPose with device cpu or backend opencv")
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]
