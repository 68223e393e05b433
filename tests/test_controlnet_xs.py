"""ControlNet-XS: diffusers' `ControlNetXSAdapter` loaded from its folder, run coupled with the base
U-Net (`controlled_unet_xs`), equal to diffusers' (deprecated) StableDiffusion(XL)ControlNetXSPipeline
on tiny random models. Inspect used to take an XS file for a plain ControlNet ("custom", exit 0)."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import (
    ControlNetXSAdapter,
    StableDiffusionControlNetXSPipeline,
    StableDiffusionXLControlNetXSPipeline,
)

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints import load_controlnet
from controlnet.errors import CheckpointError
from controlnet.pipeline import ControlUnit
from tiny_models import diffusers_latents, our_latents, random_hint, tiny_controlnet, tiny_pipeline

W = H = 64
TOL = dict(atol=1e-4, rtol=0)


def random_adapter(pipe, seed: int = 0) -> ControlNetXSAdapter:
    """An XS adapter for `pipe`'s U-Net with every weight random (its zero convs too, so it shows)."""
    torch.manual_seed(seed)
    adapter = ControlNetXSAdapter.from_unet(pipe.unet, size_ratio=0.5, learn_time_embedding=True)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    return adapter.eval()


@pytest.fixture(scope="module", params=["sd1", "sdxl"])
def case(request, tmp_path_factory):
    pipe = tiny_pipeline(request.param)
    folder = tmp_path_factory.mktemp("xs") / f"controlnet-xs-{request.param}"
    random_adapter(pipe).save_pretrained(folder)
    return request.param, pipe, folder


def reference(pipe, adapter, hint, steps, **kw):
    classes = (StableDiffusionControlNetXSPipeline, StableDiffusionXLControlNetXSPipeline)
    return diffusers_latents(pipe, classes, {"controlnet": adapter}, hint, steps, W, **kw)


def ours(pipe, units, steps):
    return our_latents(pipe, units, steps, W)


def test_equals_diffusers_controlnet_xs_pipeline(case):
    family, pipe, folder = case
    net, hint = load_controlnet(folder), random_hint(W, H, seed=2)
    assert net.loaded_from["layout"] == "controlnet-xs"
    with torch.no_grad():
        got = ours(pipe, [ControlUnit(net, hint, weight=0.7, end=0.75, resize=None)], steps=4)
        want = reference(pipe, ControlNetXSAdapter.from_pretrained(folder), hint, 4, controlnet_conditioning_scale=0.7,
                         control_guidance_end=0.75)
        plain = ours(pipe, [], steps=4)
    torch.testing.assert_close(got, want, **TOL)
    assert (got - plain).abs().max() > 1e-3  # the control is visible, so the parity means something


def test_inspect_names_controlnet_xs(case, capsys):
    family, pipe, folder = case
    code, out, err = run_cli(["inspect", folder, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert info["family"] == "controlnet-xs" and info["layout"] == "controlnet-xs"
    assert f"cross-attention width {pipe.unet.config.cross_attention_dim}" in info["made_for"]


def test_a_file_without_its_config_is_named_and_refused(case):
    _, _, folder = case
    with pytest.raises(CheckpointError, match="ControlNet-XS .*config.json"):
        load_controlnet(folder / "diffusion_pytorch_model.safetensors")


def test_generate_and_the_only_unit_rule(tmp_path_factory, capsys):
    d = tmp_path_factory.mktemp("xs_cli")
    pipe = tiny_pipeline("sd1")
    pipe.save_pretrained(d / "base")
    random_adapter(pipe).save_pretrained(d / "xs")
    tiny_controlnet(pipe).save_pretrained(d / "cn")
    random_hint(W, H).save(d / "hint.png")
    common = ["generate", "--model", d / "base", "--prompt", "a house", "--steps", "2", "--width", W, "--height", H]
    code, _, err = run_cli([*common, "--controlnet", d / "xs", "--image", d / "hint.png", "-o", d / "out"], capsys)
    assert code == 0, err
    assert (d / "out" / "00000-0.png").is_file() or any((d / "out").glob("*.png"))
    assert_user_error([*common, "--controlnet", d / "xs", "--image", d / "hint.png", "--controlnet", d / "cn",
                       "--image", d / "hint.png", "-o", d / "out2"], capsys, "ControlNet-XS unit must be the only unit")
    xl = tiny_pipeline("sdxl")
    random_adapter(xl).save_pretrained(d / "xs-xl")
    assert_user_error([*common, "--controlnet", d / "xs-xl", "--image", d / "hint.png", "-o", d / "out3"], capsys,
                      "xs-xl", "ControlNet-XS made for", "does not fit this base")


@pytest.mark.parametrize("damage,message", [("truncate", "truncated"), ("drop", "do not fit its config")])
def test_damaged_xs_folder_gets_one_line_errors(case, tmp_path, capsys, damage, message):
    import shutil

    from safetensors.torch import load_file, save_file

    _, _, folder = case
    bad = tmp_path / "xs"
    shutil.copytree(folder, bad)
    weights = bad / "diffusion_pytorch_model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-2000])
    else:
        state = load_file(str(weights))
        del state["control_to_base_for_conv_in.weight"]
        save_file(state, str(weights))
    assert_user_error(["inspect", bad] if damage == "truncate" else ["convert", bad, tmp_path / "out", "--to", "diffusers"],
                      capsys, str(bad), message)


def test_convert_round_trips_to_a_single_file_and_back(case, tmp_path, capsys):
    """An XS adapter written as one .safetensors carries its config, so it reloads without config.json."""
    _, _, folder = case
    code, _, err = run_cli(["convert", folder, tmp_path / "xs.safetensors", "--to", "diffusers"], capsys)
    assert code == 0, err
    again, first = load_controlnet(tmp_path / "xs.safetensors"), load_controlnet(folder)
    assert all(torch.equal(v, first.adapter.state_dict()[k]) for k, v in again.adapter.state_dict().items())
