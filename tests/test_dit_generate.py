"""`controlnet generate` with a Flux or SD3 base (issue 21 §2): the CLI's picture equals `FluxBase` /
`SD3Base` (hence `sample_flux` / `sample_sd3`) called directly with the same settings, `--from`
replays it, and a ControlNet made for another base is one line naming both."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from bad_input_tools import assert_user_error, run_cli
from controlnet.checkpoints.dit import save_dit_controlnet
from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet
from controlnet.pipeline.flux import FluxBase, FluxControl
from controlnet.pipeline.sd3 import SD3Base, SD3Control
from dit_bases import FLUX, SD3, save_flux_base, save_sd3_base
from tiny_models import randomized

SIZES = {"flux": 64, "sd3": 8}  # the tiny Flux VAE scales by 8 (then 2×2 packing), the SD3 one by 1


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Tiny Flux and SD3 base folders (diffusers' save_pretrained), a ControlNet file per base (Flux:
    a plain and a union net), a U-Net ControlNet, and a hint per base size."""
    from controlnet.checkpoints import save_controlnet
    from controlnet.nn import ControlNet
    from controlnet.tiny import tiny_unet

    root = tmp_path_factory.mktemp("dit")
    save_flux_base(root / "flux")
    save_sd3_base(root / "sd3")
    nets = {"flux": FluxControlNet(**dict(FLUX, num_layers=1, num_single_layers=2)),
            "union": FluxControlNet(**dict(FLUX, num_layers=2, num_single_layers=0, num_mode=10)),
            "sd3": SD3ControlNet(**dict(SD3, num_layers=2)),
            "sd3-inpaint": SD3ControlNet(**dict(SD3, num_layers=2, extra_conditioning_channels=1))}
    for seed, (name, net) in enumerate(nets.items(), 4):
        save_dit_controlnet(randomized(net.eval(), seed), root / f"{name}.safetensors")
    save_controlnet(ControlNet.from_unet(tiny_unet("sd1"), vae_scale_factor=2), root / "unet.safetensors")
    rng = np.random.RandomState(0)
    for kind, size in SIZES.items():
        PIL.Image.fromarray((rng.rand(size, size, 3) * 255).astype(np.uint8)).save(root / f"hint-{kind}.png")
    return root


def _generate(store, capsys, argv) -> tuple[np.ndarray, str]:
    code, out, err = run_cli(["generate", *argv, "-o", store / "out", "--no-grid"], capsys)
    assert code == 0, err
    path = out.strip().splitlines()[-1]
    return np.asarray(PIL.Image.open(path).convert("RGB")), path


def _agree(got: np.ndarray, want) -> None:
    want = np.asarray(want.convert("RGB"))
    assert got.shape == want.shape
    assert np.array_equal(got, want)  # the same floats, hence the same 8-bit picture


@pytest.fixture(autouse=True)
def _out(store):
    (store / "out").mkdir(exist_ok=True)


def test_a_flux_base_with_two_controlnets_equals_flux_base_and_replays(store, capsys):
    hint = store / "hint-flux.png"
    argv = ["--model", store / "flux", "--prompt", "a red cube", "--controlnet", store / "flux.safetensors", "--image", hint,
            "--weight", "0.7", "--end", "0.6", "--controlnet", store / "union.safetensors", "--image", hint,
            "--control-type", "depth", "--start", "0.3", "--steps", "3", "--guidance-scale", "4.0", "--seed", "5"]
    got, path = _generate(store, capsys, argv)
    from controlnet.checkpoints import load_controlnet

    base = FluxBase.from_pretrained(store / "flux")
    image = PIL.Image.open(hint)
    controls = [FluxControl(load_controlnet(store / "flux.safetensors"), image, 0.7, 0.0, 0.6),
                FluxControl(load_controlnet(store / "union.safetensors"), image, 1.0, 0.3, 1.0, mode="depth")]
    want = base("a red cube", controls, width=64, height=64, steps=3, guidance_scale=4.0,
                generator=torch.Generator().manual_seed(5), output_type="pil")[0]
    _agree(got, want)
    plain = base("a red cube", controls[:1], width=64, height=64, steps=3, guidance_scale=4.0,
                 generator=torch.Generator().manual_seed(5), output_type="pil")[0]
    assert np.abs(got.astype(int) - np.asarray(plain).astype(int)).max() > 0  # the union net's hint acts
    again, _ = _generate(store, capsys, ["--from", path])
    assert np.array_equal(again, got)


def test_a_flux_base_with_true_cfg_equals_flux_base_and_replays(store, capsys):
    hint = store / "hint-flux.png"
    argv = ["--model", store / "flux", "--prompt", "a red cube", "--negative-prompt", "grass", "--true-cfg", "2.5",
            "--controlnet", store / "flux.safetensors", "--image", hint, "--steps", "2", "--seed", "7"]
    got, path = _generate(store, capsys, argv)
    from controlnet.checkpoints import load_controlnet

    base = FluxBase.from_pretrained(store / "flux")
    controls = [FluxControl(load_controlnet(store / "flux.safetensors"), PIL.Image.open(hint))]
    run = dict(width=64, height=64, steps=2, guidance_scale=3.5, generator=torch.Generator().manual_seed(7), output_type="pil")
    _agree(got, base("a red cube", controls, negative_prompt="grass", true_cfg_scale=2.5, **run)[0])
    run["generator"] = torch.Generator().manual_seed(7)
    assert not np.array_equal(got, np.asarray(base("a red cube", controls, **run)[0]))  # the negative prompt acts
    again, _ = _generate(store, capsys, ["--from", path])
    assert np.array_equal(again, got)


def test_an_sd3_base_equals_sd3_base_with_a_negative_prompt_and_replays(store, capsys):
    hint = store / "hint-sd3.png"
    argv = ["--model", store / "sd3", "--prompt", "a red cube", "--negative-prompt", "blurry", "--controlnet",
            store / "sd3.safetensors", "--image", hint, "--weight", "0.8", "--steps", "3", "--cfg", "5", "--seed", "2",
            "--num-images", "2"]
    code, out, err = run_cli(["generate", *argv, "-o", store / "out", "--no-grid"], capsys)
    assert code == 0, err
    paths = out.strip().splitlines()
    assert len(paths) == 2
    from controlnet.checkpoints import load_controlnet

    base = SD3Base.from_pretrained(store / "sd3")
    controls = [SD3Control(load_controlnet(store / "sd3.safetensors"), PIL.Image.open(hint), 0.8)]
    for k, path in enumerate(paths):
        want = base("a red cube", controls, negative_prompt="blurry", width=8, height=8, steps=3, guidance_scale=5.0,
                    generator=torch.Generator().manual_seed(2 + k), output_type="pil")[0]
        _agree(np.asarray(PIL.Image.open(path).convert("RGB")), want)
    again, _ = _generate(store, capsys, ["--from", paths[1]])
    assert np.array_equal(again, np.asarray(PIL.Image.open(paths[1]).convert("RGB")))


@pytest.mark.parametrize("model, net, fragments", [
    ("flux", "unet", ("U-Net", "Flux base")),
    ("flux", "sd3", ("SD3 ControlNet", "Flux base")),
    ("sd3", "flux", ("Flux ControlNet", "SD3 base")),
    ("sd3", "union", ("Flux ControlNet", "SD3 base")),
])
def test_a_controlnet_made_for_another_base_is_one_line_naming_both(store, capsys, model, net, fragments):
    err = assert_user_error(["generate", "--model", store / model, "--controlnet", store / f"{net}.safetensors", "--image",
                             store / f"hint-{model}.png", "-o", store / "out"], capsys, *fragments, f"{net}.safetensors")
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("model, net, extra, fragment", [
    ("flux", "flux", ["--scheduler", "ddim"], "--scheduler"),
    ("flux", "flux", ["--mode", "control"], "--mode"),
    ("flux", "flux", ["--negative-prompt", "x"], "--negative-prompt"),
    ("flux", "flux", ["--control-type", "depth"], "not one"),
    ("flux", "union", [], "control mode"),
    ("flux", "union", ["--control-type", "nosuch"], "control mode"),
    ("sd3", "sd3", ["--control-type", "depth"], "Flux union"),
    ("sd3", "sd3", ["--true-cfg", "2"], "--true-cfg"),
    ("sd3", "sd3", ["--cfg", "nan"], "--guidance-scale"),
    ("sd3", "sd3", ["--num-images", "0"], "--num-images"),
    ("sd3", "sd3", ["--weight", "1e9"], "--weight"),
    ("flux", "flux", ["--steps", "0"], "steps"),
    ("flux", "flux", ["--compile"], "--compile is for U-Net base models"),
    ("flux", "flux", ["--width", "72", "--height", "64"], "multiples of 16"),
])
def test_what_a_transformer_base_cannot_do_is_one_line(store, capsys, model, net, extra, fragment):
    argv = ["generate", "--model", store / model, "--controlnet", store / f"{net}.safetensors", "--image",
            store / f"hint-{model}.png", "--steps", "1", "-o", store / "out", *extra]
    err = assert_user_error(argv, capsys, fragment)
    assert len(err.strip().splitlines()) == 1


def test_one_given_side_keeps_the_hints_aspect_and_the_infotext_names_euler(store, capsys):
    wide = store / "wide.png"
    PIL.Image.new("RGB", (128, 64), "gray").save(wide)
    got, path = _generate(store, capsys, ["--model", store / "flux", "--controlnet", store / "flux.safetensors", "--image",
                                          wide, "--height", "32", "--steps", "1", "--seed", "1"])
    assert got.shape == (32, 64, 3)
    assert "Sampler: Euler" in PIL.Image.open(path).info["parameters"]


def test_a_picture_that_goes_nan_is_refused_not_saved_black(store, capsys, tmp_path):
    from controlnet.checkpoints import load_controlnet

    net = load_controlnet(store / "flux.safetensors")
    with torch.no_grad():
        net.controlnet_blocks[0].weight.fill_(3e38)  # finite (the loader takes it), overflows when sampled
    save_dit_controlnet(net, tmp_path / "inf.safetensors")
    (tmp_path / "out").mkdir()
    err = assert_user_error(["generate", "--model", store / "flux", "--controlnet", tmp_path / "inf.safetensors", "--image",
                             store / "hint-flux.png", "--steps", "1", "-o", tmp_path / "out"], capsys, "numerically wrong")
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "out").iterdir())


def test_a_unet_base_refuses_true_cfg_and_a_flux_controlnet(store, capsys, tmp_path):
    from tiny_models import save_base_and_controlnet

    save_base_and_controlnet(tmp_path)
    hint = store / "hint-flux.png"
    assert_user_error(["generate", "--model", tmp_path / "base", "--controlnet", tmp_path / "cn", "--image", hint,
                       "--true-cfg", "2", "-o", tmp_path], capsys, "--true-cfg", "Flux")
    assert_user_error(["generate", "--model", tmp_path / "base", "--controlnet", store / "flux.safetensors", "--image", hint,
                       "-o", tmp_path], capsys, "flux")


def test_the_sd3_inpainting_net_takes_its_mask_as_sd3_base_does(store, capsys):
    from controlnet.checkpoints import load_controlnet

    hint, mask = store / "hint-sd3.png", store / "mask-sd3.png"
    area = np.zeros((8, 8, 3), np.uint8)
    area[:, 4:] = 255  # white: repaint
    PIL.Image.fromarray(area).save(mask)
    got, _ = _generate(store, capsys, ["--model", store / "sd3", "--prompt", "a red cube", "--controlnet",
                                       store / "sd3-inpaint.safetensors", "--image", hint, "--mask", mask, "--steps", "2",
                                       "--seed", "3"])
    base = SD3Base.from_pretrained(store / "sd3")
    controls = [SD3Control(load_controlnet(store / "sd3-inpaint.safetensors"), PIL.Image.open(hint), mask=PIL.Image.open(mask))]
    _agree(got, base("a red cube", controls, width=8, height=8, steps=2, generator=torch.Generator().manual_seed(3),
                     output_type="pil")[0])


def test_a_folder_of_hints_is_a_batch_with_a_flux_base(store, capsys, tmp_path):
    import shutil

    (tmp_path / "hints").mkdir()
    for name in ("a.png", "b.png"):
        shutil.copy(store / "hint-flux.png", tmp_path / "hints" / name)
    (tmp_path / "out").mkdir()
    code, out, err = run_cli(["generate", "--model", store / "flux", "--controlnet", store / "flux.safetensors", "--image",
                              tmp_path / "hints", "--steps", "1", "--seed", "4", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    a, b = (np.asarray(PIL.Image.open(tmp_path / "out" / n)) for n in ("a.png", "b.png"))
    single, _ = _generate(store, capsys, ["--model", store / "flux", "--controlnet", store / "flux.safetensors", "--image",
                                          store / "hint-flux.png", "--steps", "1", "--seed", "4"])
    assert np.array_equal(a, single) and np.array_equal(b, single)
