"""FLUX.1 Control bases (Canny/Depth dev: the control latent concatenated on the input channels) from
`controlnet generate --control-image` (issue 21 §1-2): a folder from a prompt equals diffusers'
`FluxControlPipeline` (≤ 1e-4), the CLI's picture equals `FluxBase` called directly and replays with
`--from`, and the ways to get it wrong are one line each."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from bad_input_tools import assert_user_error
from controlnet.checkpoints.dit import save_dit_controlnet
from controlnet.nn.dit_controlnet import FluxControlNet
from controlnet.pipeline.flux import FluxBase
from dit_bases import FLUX, assert_control_generate_equals_base_and_replays, save_flux_base, save_sd3_base
from tiny_models import randomized

SIZE = 64  # the tiny Flux VAE scales by 8, then 2×2 packing: 4×4 tokens


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny FLUX.1 Control base (16 latent channels in, 32 on the input: latents ‖ control latent),
    a plain Flux base, an SD3 base, a Flux ControlNet, and a hint."""
    root = tmp_path_factory.mktemp("flux-control")
    save_flux_base(root / "control", in_channels=32, out_channels=16, seed=11)
    save_flux_base(root / "flux")
    save_sd3_base(root / "sd3")
    net = FluxControlNet(**dict(FLUX, num_layers=1, num_single_layers=1))
    save_dit_controlnet(randomized(net.eval(), 3), root / "net.safetensors")
    rng = np.random.RandomState(0)
    PIL.Image.fromarray((rng.rand(SIZE, SIZE, 3) * 255).astype(np.uint8)).save(root / "hint.png")
    (root / "out").mkdir()
    return root


def test_a_control_folder_from_a_prompt_equals_flux_control_pipeline(store):
    from diffusers import FluxControlPipeline

    ref = FluxControlPipeline.from_pretrained(store / "control", local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    hint = PIL.Image.open(store / "hint.png")
    common = dict(height=SIZE, width=SIZE, guidance_scale=3.5, max_sequence_length=16)
    want = ref(prompt="a red cube on grass", control_image=hint, num_inference_steps=3, output_type="pt",
               generator=torch.Generator().manual_seed(0), **common).images
    base = FluxBase.from_pretrained(store / "control")
    got = base("a red cube on grass", control_image=hint, steps=3, generator=torch.Generator().manual_seed(0), **common)
    assert got.shape == want.shape and float((got - want).abs().max()) <= 1e-4
    other = PIL.Image.fromarray(255 - np.asarray(hint))
    moved = base("a red cube on grass", control_image=other, steps=3, generator=torch.Generator().manual_seed(0), **common)
    assert float((moved - got).abs().max()) > 1e-2  # the hint acts


def test_generate_with_a_control_base_equals_flux_base_and_replays(store, capsys):
    argv = ["generate", "--model", store / "control", "--prompt", "a red cube", "--control-image", store / "hint.png",
            "--steps", "2", "--seed", "3", "-o", store / "out", "--no-grid"]
    assert_control_generate_equals_base_and_replays(argv, FluxBase.from_pretrained(store / "control"),
                                                    store / "hint.png", SIZE, capsys)


@pytest.mark.parametrize("model, extra, fragments", [
    ("control", [], ("FLUX.1 Control", "--control-image")),
    ("flux", ["--control-image", "hint.png"], ("--control-image", "--controlnet")),
    ("sd3", ["--control-image", "hint.png"], ("--control-image",)),
    ("flux", ["--controlnet", "control/transformer/diffusion_pytorch_model.safetensors", "--image", "hint.png"],
     ("FLUX.1 Control", "--model", "--control-image")),
])
def test_control_images_where_they_do_not_belong_are_one_line(store, capsys, model, extra, fragments):
    extra = [store / a if a.endswith((".png", ".safetensors")) else a for a in extra]
    err = assert_user_error(["generate", "--model", store / model, *extra, "--steps", "1", "-o", store / "out"], capsys,
                            *fragments)
    assert len(err.strip().splitlines()) == 1


def test_a_unet_base_refuses_a_control_image(store, capsys, tmp_path):
    from tiny_models import save_base_and_controlnet

    save_base_and_controlnet(tmp_path)
    err = assert_user_error(["generate", "--model", tmp_path / "base", "--control-image", store / "hint.png", "-o", tmp_path],
                            capsys, "--control-image", "FLUX.1 Control")
    assert len(err.strip().splitlines()) == 1
