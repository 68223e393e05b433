"""T2I-Adapter: diffusers' `T2IAdapter` network, our loader (diffusers folder / file, TencentARC's
original full and light layouts) and our injection, equal to diffusers' StableDiffusionAdapterPipeline
and StableDiffusionXLAdapterPipeline (conditioning scale and factor) on tiny random models."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers import StableDiffusionAdapterPipeline, StableDiffusionXLAdapterPipeline, T2IAdapter

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints import load_controlnet, write_safetensors
from controlnet.nn import controlled_unet
from controlnet.nn.t2i_adapter import T2IAdapterNet
from controlnet.pipeline import ControlUnit
from controlnet.tiny import sd1_three_level_blocks, unet_inputs
from tiny_models import diffusers_latents, our_latents, random_hint, tiny_controlnet, tiny_pipeline

W = H = 64
TOL = dict(atol=1e-4, rtol=0)
# SDXL's three levels in miniature (plain block, then two cross-attention blocks), as the XL adapter expects
XL_UNET = dict(block_out_channels=(32, 64, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
               up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4, 4),
               transformer_layers_per_block=(1, 1, 2))


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def tiny_adapter(kind: str, in_channels: int = 3, seed: int = 0) -> T2IAdapter:
    torch.manual_seed(seed)
    channels = {"full_adapter": [32, 64], "full_adapter_xl": [32, 64, 64, 64], "light_adapter": [32, 64]}[kind]
    factor = 16 if kind == "full_adapter_xl" else 8
    return T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=2, downscale_factor=factor,
                      adapter_type=kind).eval()


@pytest.fixture(scope="module")
def sd1():
    return tiny_pipeline("sd1")


@pytest.fixture(scope="module")
def sd1_three_levels():
    """The light adapter's last block downsamples once more: a U-Net with one more level than its widths."""
    return tiny_pipeline("sd1", unet_config=dict(block_out_channels=(32, 64, 64), **sd1_three_level_blocks()))


@pytest.fixture(scope="module")
def sdxl():
    return tiny_pipeline("sdxl", unet_config=XL_UNET)


def ours(pipe, units, steps=2, **kw):
    return our_latents(pipe, units, steps, W, **kw)


def reference(pipe, adapter, hint, steps=2, **kw):
    classes = (StableDiffusionAdapterPipeline, StableDiffusionXLAdapterPipeline)
    return diffusers_latents(pipe, classes, {"adapter": adapter}, hint, steps, W, **kw)


# ------------------------------------------------------------------ parity with diffusers


def test_sd_adapter_pipeline_parity_with_conditioning_scale(sd1):
    adapter, hint = tiny_adapter("full_adapter"), random_hint(W, H, seed=3)
    got = ours(sd1, [ControlUnit(T2IAdapterNet(adapter), hint, weight=0.7, resize=None)])
    torch.testing.assert_close(got, reference(sd1, adapter, hint, adapter_conditioning_scale=0.7), **TOL)
    plain = ours(sd1, [])
    assert (got - plain).abs().max() > 1e-2  # the adapter is visible, so the parity means something


def test_light_adapter_pipeline_parity(sd1_three_levels):
    pipe, adapter, hint = sd1_three_levels, tiny_adapter("light_adapter"), random_hint(W, H, seed=4)
    got = ours(pipe, [ControlUnit(T2IAdapterNet(adapter), hint, weight=1.2, resize=None)])
    torch.testing.assert_close(got, reference(pipe, adapter, hint, adapter_conditioning_scale=1.2), **TOL)


def test_xl_adapter_pipeline_parity_with_scale_and_factor(sdxl):
    """SDXL's `adapter_conditioning_factor` is the unit's end: the adapter acts in steps i < int(N * factor)."""
    adapter, hint = tiny_adapter("full_adapter_xl"), random_hint(W, H, seed=5)
    got = ours(sdxl, [ControlUnit(T2IAdapterNet(adapter), hint, weight=0.8, end=0.5, resize=None)], steps=4)
    want = reference(sdxl, adapter, hint, steps=4, adapter_conditioning_scale=0.8, adapter_conditioning_factor=0.5)
    torch.testing.assert_close(got, want, **TOL)
    full = ours(sdxl, [ControlUnit(T2IAdapterNet(adapter), hint, weight=0.8, resize=None)], steps=4)
    assert (got - full).abs().max() > 1e-3  # the factor matters


def test_adapter_and_controlnet_enter_at_their_own_points(sd1):
    """One U-Net call with a ControlNet's residuals (at the skips) and adapter features (inside the
    blocks) equals diffusers' U-Net given both `down_block_additional_residuals` and
    `down_intrablock_additional_residuals`."""
    unet, cn = sd1.unet, tiny_controlnet(sd1, seed=1)
    sample, t, ehs, _, _ = unet_inputs(unet, batch=2, size=8)
    features = T2IAdapterNet(tiny_adapter("full_adapter")).embed_hint(torch.rand(2, 3, 64, 64))
    residuals = cn(sample, t, ehs, torch.rand(2, 3, 64, 64))
    got = controlled_unet(unet, sample, t, ehs, [(residuals, 0.5)], adapter_features=[f * 0.9 for f in features])
    want = unet(sample, t, ehs, down_block_additional_residuals=[r * 0.5 for r in residuals.down],
                mid_block_additional_residual=residuals.mid * 0.5,
                down_intrablock_additional_residuals=[f * 0.9 for f in features]).sample
    torch.testing.assert_close(got, want, **TOL)


# ------------------------------------------------------------------ files


def to_original(state: dict, light: bool) -> dict:
    """diffusers keys → TencentARC's (the inverse of diffusers' scripts/convert_original_t2i_adapter.py)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("adapter.")
        if light:
            key = re.sub(r"body\.(\d+)\.resnets\.(\d+)\.", r"body.\1.body.\2.", key)
        elif m := re.match(r"body\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            key = f"body.{2 * int(m[1]) + int(m[2])}.{m[3]}"
        elif m := re.match(r"body\.(\d+)\.in_conv\.(.+)", key):
            key = f"body.{2 * int(m[1])}.in_conv.{m[2]}"
        out[key] = value
    return out


@pytest.mark.parametrize("kind,in_channels", [("full_adapter", 3), ("full_adapter", 1), ("light_adapter", 3),
                                              ("full_adapter_xl", 3)])
def test_every_layout_loads_to_the_same_network(tmp_path, kind, in_channels):
    adapter = tiny_adapter(kind, in_channels)
    adapter.save_pretrained(tmp_path / "folder")
    write_safetensors(adapter.state_dict(), tmp_path / "single.safetensors")
    torch.save(to_original(adapter.state_dict(), kind == "light_adapter"), tmp_path / "t2iadapter_x_sd14v1.pth")
    hint = torch.rand(1, in_channels, 64, 64)
    want = adapter(hint)
    for name, layout in (("folder", "t2i-adapter"), ("single.safetensors", "t2i-adapter"),
                         ("t2iadapter_x_sd14v1.pth", "t2i-adapter-original")):
        net = load_controlnet(tmp_path / name)
        assert net.loaded_from["layout"] == layout and net.config.adapter_type == kind
        for a, b in zip(net.embed_hint(hint), want, strict=True):
            torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, sd1):
    d = tmp_path_factory.mktemp("t2i")
    sd1.save_pretrained(d / "base")
    adapter = tiny_adapter("full_adapter")
    torch.save(to_original(adapter.state_dict(), light=False), d / "t2iadapter_canny_sd14v1.pth")
    tiny_adapter("full_adapter_xl").save_pretrained(d / "xl-adapter")
    tiny_controlnet(sd1, seed=2).save_pretrained(d / "cn")
    random_hint(W, H, seed=1).save(d / "hint.png")
    return d


def test_inspect_names_the_family(cli_files, capsys):
    code, out, err = run_cli(["inspect", cli_files / "t2iadapter_canny_sd14v1.pth", "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)
    assert (info["family"], info["layout"], info["adapter_type"], info["hint_channels"]) == (
        "t2i-adapter", "t2i-adapter-original", "full_adapter", 3)


def test_generate_with_an_adapter_beside_a_controlnet(cli_files, tmp_path, capsys):
    common = ["generate", "--model", cli_files / "base", "--prompt", "a house", "--steps", "2", "--seed", "1",
              "--width", W, "--height", H]
    adapter_unit = ["--controlnet", cli_files / "t2iadapter_canny_sd14v1.pth", "--image", cli_files / "hint.png", "--weight", "0.8"]
    cn_unit = ["--controlnet", cli_files / "cn", "--image", cli_files / "hint.png"]
    for i, units in enumerate((cn_unit, [*adapter_unit, *cn_unit])):
        code, _, err = run_cli([*common, *units, "-o", tmp_path / str(i)], capsys)
        assert code == 0, err
    assert (tmp_path / "1" / "00000-1.png").read_bytes() != (tmp_path / "0" / "00000-1.png").read_bytes()


def test_adapter_for_another_base_is_refused_naming_both(cli_files, tmp_path, capsys):
    assert_user_error(["generate", "--model", cli_files / "base", "--prompt", "x", "--steps", "1", "--width", W,
                       "--height", H, "--controlnet", cli_files / "xl-adapter", "--image", cli_files / "hint.png",
                       "-o", tmp_path], capsys, "xl-adapter", "made for SDXL (full_adapter_xl", "this base U-Net takes")


def test_adapter_refuses_modes_and_masks(cli_files, tmp_path, capsys):
    assert_user_error(["generate", "--model", cli_files / "base", "--prompt", "x", "--steps", "1", "--width", W,
                       "--height", H, "--controlnet", cli_files / "t2iadapter_canny_sd14v1.pth", "--image",
                       cli_files / "hint.png", "--mode", "control", "-o", tmp_path], capsys, "T2I-Adapter", "mode")


@pytest.mark.parametrize("damage,message", [("truncate", "truncated"), ("drop", "truncated or damaged"),
                                            ("misshape", "do not fit"), ("stray", "fits no T2I-Adapter module")])
def test_damaged_adapter_files_get_one_line_errors(tmp_path, capsys, damage, message):
    state = to_original(tiny_adapter("full_adapter").state_dict(), light=False)
    if damage == "drop":
        del state["body.1.block2.weight"]
    elif damage == "misshape":
        state["body.1.block1.weight"] = torch.zeros(32, 32, 1, 1)
    elif damage == "stray":
        state["body.0.extra.weight"] = torch.zeros(1)
    path = tmp_path / "t2iadapter_bad.pth"
    torch.save(state, path)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-500])
    assert_user_error(["convert", path, tmp_path / "out", "--to", "diffusers"], capsys, str(path), message)


def test_convert_writes_a_diffusers_adapter(cli_files, tmp_path, capsys):
    """TencentARC's .pth → a folder diffusers' `T2IAdapter.from_pretrained` loads, with the same weights."""
    src = cli_files / "t2iadapter_canny_sd14v1.pth"
    code, _, err = run_cli(["convert", src, tmp_path / "canny-adapter", "--to", "diffusers"], capsys)
    assert code == 0, err
    theirs = T2IAdapter.from_pretrained(tmp_path / "canny-adapter", local_files_only=True)
    mine = load_controlnet(src).adapter.state_dict()
    assert theirs.config.adapter_type == "full_adapter"
    assert all(torch.equal(v, mine[k]) for k, v in theirs.state_dict().items())
    assert_user_error(["convert", src, tmp_path / "x.pth", "--to", "original"], capsys, "T2IAdapter is written in the diffusers layout only")
