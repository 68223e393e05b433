"""ControlNet-XS files are named for what they are and refused with one line (not supported yet),
instead of being taken for a plain diffusers ControlNet (inspect used to exit 0 with family "custom")."""

from __future__ import annotations

import pytest
from diffusers import ControlNetXSAdapter

from bad_input_tools import assert_user_error
from controlnet.checkpoints import load_controlnet
from controlnet.errors import CheckpointError
from controlnet.tiny import tiny_unet


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def xs_folder(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("xs") / f"controlnet-xs-{request.param}"
    ControlNetXSAdapter.from_unet(tiny_unet(request.param), size_ratio=0.5).save_pretrained(folder)
    return folder


def test_inspect_names_controlnet_xs_and_exits_non_zero(xs_folder, capsys):
    for target in (xs_folder, xs_folder / "diffusion_pytorch_model.safetensors"):
        assert_user_error(["inspect", target], capsys, str(target), "ControlNet-XS", "not supported yet")


def test_load_controlnet_names_controlnet_xs(xs_folder):
    with pytest.raises(CheckpointError, match="ControlNet-XS .*cross-attention width"):
        load_controlnet(xs_folder / "diffusion_pytorch_model.safetensors")
