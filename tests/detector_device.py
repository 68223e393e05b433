"""Whether a learned detector runs where its network is, checked without a GPU: the detectors' device is set to
`meta` (tensors with shapes and no data), so the network loads there, every operation runs for free, and torch
refuses to mix a tensor the detector made on the CPU with the network's ("... is not on the expected device
meta"). A detector that moves its input and makes its constants on its network's device gets through the network
and first fails where it reads the meta output back ("Cannot copy out of meta tensor; no data!"): the same code
on a GPU copies the map back. Only the path up to that first read-back is covered; later networks (OpenPose's hands
and face, LeReS++'s merge) have their own checks in their test files."""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np
import pytest

from controlnet.annotators import annotate, local_models

PICTURE = np.random.default_rng(5).integers(0, 256, (96, 128, 3), dtype=np.uint8)
READ_BACK = r"Cannot copy out of meta tensor|cannot be called on meta tensors"
MIXED = r"not on the expected device|same device|device type"


@contextmanager
def networks_on_meta():
    """The detectors' device set to meta; `on_device` refuses it to users (it holds no data), so tests set it here."""
    token = local_models._DEVICE.set("meta")
    try:
        yield
    finally:
        local_models._DEVICE.reset(token)


def assert_reaches_read_back(call) -> None:
    """`call()` on meta networks gets through them: it fails reading their output back, not mixing devices."""
    try:
        with networks_on_meta():
            call()
    except (NotImplementedError, RuntimeError) as exc:
        message = str(exc)
        assert not re.search(MIXED, message), f"a tensor stayed off the network's device: {message}"
        assert re.search(READ_BACK, message), message
    else:  # a CPU input through meta weights computes on the CPU (torch's convolutions let that pass)
        pytest.fail("the detector's map was computed off its network's device (its input stayed on the CPU)")


def assert_runs_on_the_network_device(module: str, picture=PICTURE, **params) -> None:
    """`annotate(module)` with the networks on meta reaches the read-back; on the CPU named outright it gives
    the default's map."""
    assert_reaches_read_back(lambda: annotate(module, picture, resolution=min(picture.shape[:2]), **params))
    default = annotate(module, picture, resolution=min(picture.shape[:2]), **params)
    np.testing.assert_array_equal(annotate(module, picture, resolution=min(picture.shape[:2]), device="cpu", **params),
                                  default)
