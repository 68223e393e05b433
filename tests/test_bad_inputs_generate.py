"""Bad inputs to `generate`, `demo`, `example` and the ControlPipeline / ControlUnit API.

Each case: a one-line error naming the input (exit 2, no traceback), nothing silently accepted, no
user file changed and no partial file left; value errors are raised before any sampling step, and
errors about the output place before any model is loaded.
"""

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import PngImagePlugin

from bad_input_tools import assert_user_error, full_disk, needs_posix, read_only, run_cli, unchanged
from controlnet.errors import InputError
from controlnet.pipeline import ControlPipeline, ControlUnit
from tiny_models import random_hint, save_base_and_controlnet, tiny_controlnet, tiny_pipeline

W, H = 64, 48


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny SD1 base model folder, its ControlNet, an SDXL ControlNet, and condition images."""
    d = tmp_path_factory.mktemp("bad_generate")
    save_base_and_controlnet(d)
    tiny_controlnet(tiny_pipeline("sdxl")).save_pretrained(d / "cn_xl")
    random_hint(W, H, seed=1).save(d / "a.png")
    random_hint(W, 4 * H, seed=2).save(d / "tall.png")  # another aspect ratio than the output
    (d / "not_an_image.png").write_text("this is text, not a PNG")
    (d / "existing_file").write_text("the user's file")
    (d / "damaged.safetensors").write_bytes(b"garbage, not a header")
    (d / "damaged.ckpt").write_bytes(b"garbage, not a pickle")
    return d


@pytest.fixture
def sampling(monkeypatch):
    """Records every start of the denoising loop and every model load (both should not happen)."""
    calls = {"denoise": 0, "load": 0}
    denoise, load = ControlPipeline._denoise, ControlPipeline.from_pretrained.__func__

    def spy_denoise(self, *a, **k):
        calls["denoise"] += 1
        return denoise(self, *a, **k)

    def spy_load(cls, *a, **k):
        calls["load"] += 1
        return load(cls, *a, **k)

    monkeypatch.setattr(ControlPipeline, "_denoise", spy_denoise)
    monkeypatch.setattr(ControlPipeline, "from_pretrained", classmethod(spy_load))
    return calls


def generate(d, out, *extra, unit=True):
    """`controlnet generate` on the tiny model, one unit unless `unit=False`."""
    unit_args = ["--controlnet", d / "cn", "--image", d / "a.png"] if unit else []
    return ["generate", "--model", d / "base", "--prompt", "a house", "--steps", "2", "--seed", "0",
            "--width", str(W), "--height", str(H), "-o", out, *unit_args, *extra]


# ---------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--cfg", "nan"], ["guidance_scale", "finite"]),
        (["--cfg", "inf"], ["guidance_scale", "finite"]),
        (["--cfg", "-2"], ["guidance_scale", "got -2"]),
        (["--eta", "nan"], ["eta", "finite"]),
        (["--eta", "-0.5"], ["eta", "[0, 1]"]),
        (["--eta", "3"], ["eta", "[0, 1]"]),
        (["--weight", "nan"], ["weight", "finite"]),
        (["--weight", "-1"], ["weight", "got -1"]),
        (["--weight", "inf"], ["weight", "finite"]),
        (["--start", "-0.1"], ["start", "[0, 1]"]),
        (["--end", "1.5"], ["end", "[0, 1]"]),
        (["--start", "nan"], ["start", "finite"]),
        (["--start", "0.6", "--end", "0.4"], ["must be before end"]),
        (["--steps", "0"], ["steps", "got 0"]),
        (["--steps", "-3"], ["steps", "got -3"]),
        (["--steps", "100000"], ["steps", "1000"]),
        (["--num-images", "0"], ["num_images", "got 0"]),
        (["--seed", "-1"], ["seed", "got -1"]),
        (["--seed", str(2**40)], ["seed", str(2**40)]),
        (["--width", "50"], ["width", "multiple of 8"]),
        (["--height", "0"], ["height", "multiple of 8"]),
        (["--width", "1000000"], ["width", "at most"]),
        (["--scheduler", "warp"], ["unknown scheduler", "warp"]),
        (["--mode", "loud"], ["unknown control mode", "loud"]),
        (["--resize", "zoom"], ["resize", "zoom"]),
    ],
)
def test_bad_values_are_refused_before_sampling(files, tmp_path, capsys, sampling, extra, fragments):
    out = tmp_path / "out"
    with unchanged(tmp_path):
        assert_user_error(generate(files, out, *extra), capsys, *fragments)
    assert sampling["denoise"] == 0


@pytest.mark.parametrize("extra", [["--steps", "2.5"], ["--cfg", "high"], ["--seed", "1e3"]])
def test_non_numbers_are_usage_errors(files, tmp_path, capsys, extra):
    assert_user_error(generate(files, tmp_path, *extra), capsys, extra[0])


def test_img2img_strength_is_checked(files, tmp_path, capsys, sampling):
    for strength, fragment in (("nan", "finite"), ("0", "(0, 1]"), ("1.5", "(0, 1]")):
        assert_user_error(generate(files, tmp_path, "--init-image", files / "a.png", "--strength", strength),
                          capsys, "strength", fragment)
    assert sampling["denoise"] == 0


# ---------------------------------------------------------------------------------- values that overflow
# Each of these made an all-black picture and exited 0 (issue 19).

NINES = "9" * 400


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--weight", "1e30"], ["weight", "[0, 10]", "1e+30"]),
        (["--schedule", "0:1,0.5:1e30"], ["schedule[1]", "factor 1e+30", "at most 10"]),
        (["--schedule", "0:1,0.5:1e400"], ["schedule[1]", "factor inf"]),
        (["--cfg", "1e30"], ["guidance_scale", "[0, 100]"]),
        (["--prompt", f"a (red:{NINES}) house"], ["prompt", "weight of 'red' is inf", "between 0 and 10"]),
        (["--prompt", "(" * 5000 + "red" + ")" * 5000], ["prompt", "5000 deep"]),
        (["--prompt", "[" * 5000 + "red"], ["prompt", "5000 deep"]),
        (["--negative-prompt", f"(ugly:{NINES})"], ["negative_prompt", "weight of 'ugly' is inf"]),
        (["--negative-prompt", "(" * 5000 + "ugly" + ")" * 5000], ["negative_prompt", "5000 deep"]),
        (["--prompt", '("a red", "a blue").blend(nan, 1)'], ["prompt", ".blend() weight is nan"]),
        (["--prompt", '("a red", "a blue").blend(0, 0)'], ["prompt", "add up to 0"]),
        (["--prompt", '("a red", "a blue").and(1, 5000)'], ["prompt", ".and() weight is 5000"]),
        (["--prompt", '("a red", "a blue").blend(1)'], ["prompt", "compel cannot parse"]),
        (["--prompt", "(" * 5000 + "red" + ")1.1" * 5000], ["prompt", "5000 deep"]),  # compel's parser: RecursionError
        (["--prompt", "(" * 8 + "red" + ")" * 8 + " house+"], ["prompt", "compel", "8 deep"]),  # ... or minutes
    ],
)
def test_values_that_overflow_are_refused_before_sampling(files, tmp_path, capsys, sampling, extra, fragments):
    with unchanged(tmp_path):
        assert_user_error(generate(files, tmp_path / "out", *extra), capsys, *fragments)
    assert sampling["denoise"] == 0


def test_names_like_digits_in_the_output_folder_do_not_break_numbering(files, tmp_path, capsys):
    """'²'.isdigit() is True but int('²') fails: the next free index must skip such names."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("²-1.png", "①.png", "00003-9.png"):
        random_hint(8, 8).save(out / name)
    code, stdout, err = run_cli(generate(files, out, "--no-grid"), capsys)
    assert code == 0, err
    assert stdout.split()[-1].endswith("00004-0.png")


def test_modest_prompt_syntax_still_samples(files, tmp_path, capsys):
    """The bounds leave ordinary weighting alone: A1111 and compel syntax within them sample."""
    for prompt in ("a ((red)) [house] (roof:1.4)", "a (red)1.3 house+ ((roof))-"):
        code, _, err = run_cli(generate(files, tmp_path, "--prompt", prompt, "--no-grid"), capsys)
        assert code == 0, err


@pytest.fixture(scope="module")
def overflowing_controlnet(files, tmp_path_factory):
    """A ControlNet with finite but huge weights: its residuals overflow, whatever the control weight."""
    from controlnet.checkpoints import load_controlnet

    net = load_controlnet(files / "cn")
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(1e30)
    folder = tmp_path_factory.mktemp("overflowing") / "cn"
    net.save_pretrained(folder)
    return folder


def test_a_picture_that_went_non_finite_is_not_saved(files, overflowing_controlnet, tmp_path, capsys):
    out = tmp_path / "out"
    argv = generate(files, out, unit=False) + ["--controlnet", overflowing_controlnet, "--image", files / "a.png"]
    code, _, err = run_cli(argv, capsys)
    assert code != 0 and "Traceback" not in err and "internal error" not in err, err
    assert "NaN or infinite" in err and "no picture is saved" in err and "weights too large" in err, err
    assert not out.exists() or not list(out.iterdir())


def test_the_api_refuses_non_finite_latents(sd1):
    from controlnet.errors import NonFiniteError

    p, _ = sd1
    nan = lambda i, t, x: x * float("nan")  # noqa: E731 - a callback that breaks the latents
    for output_type in ("latent", "np"):
        with pytest.raises(NonFiniteError, match="the latents hold NaN or infinite values"):
            p("x", steps=1, seed=0, width=W, height=H, output_type=output_type, progress=False, callback=nan)


# ---------------------------------------------------------------------------------- options that need another
# Each was ignored without a word (issue 19).


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--controlnet", "{d}/cn", "--image", "{d}/a.png", "--schedule-interpolation", "linear"],
         ["schedule_interpolation 'linear' does nothing without a schedule", "--schedule"]),
        (["--strength", "0.5"], ["--strength does nothing without --init-image"]),
        (["--inpaint-mode", "inpaint_only"], ["inpaint_mode 'inpaint_only'", "without a region to repaint"]),
        (["--mask-blur", "4"], ["mask_blur 4", "without a region to repaint", "--inpaint-mask"]),
        (["--init-image", "{d}/a.png", "--mask-blur", "4"], ["mask_blur 4", "without a region to repaint"]),
        (["--config", "{d}/base"], ["--config", "single-file --model", "leave --config out"]),
    ],
)
def test_options_that_need_another_are_refused(files, tmp_path, capsys, sampling, extra, fragments):
    argv = generate(files, tmp_path / "out", *[a.format(d=files) for a in extra], unit=False)
    with unchanged(tmp_path):
        assert_user_error(argv, capsys, *fragments)
    assert sampling["denoise"] == 0


def test_from_unet_names_what_it_takes(sd1):
    from controlnet.nn import ControlNet

    p, _ = sd1
    for pipe in (p, tiny_pipeline("sd1")):  # ours and diffusers' pipeline: both have .unet
        with pytest.raises(InputError, match=r"takes a diffusers UNet2DConditionModel.*ControlNet.from_unet\(pipe.unet\)"):
            ControlNet.from_unet(pipe)
    with pytest.raises(InputError, match="got a str"):
        ControlNet.from_unet("unet")
    assert ControlNet.from_unet(p.unet) is not None
    with pytest.raises(InputError, match="from_diffusers takes a diffusers ControlNetModel, got a UNet2DConditionModel.*from_unet"):
        ControlNet.from_diffusers(p.unet)
    with pytest.raises(InputError, match="has no unet, vae.*from_pretrained"):
        ControlPipeline.from_diffusers(p.unet)


def test_the_server_answers_a_non_finite_result_with_a_clear_422():
    from controlnet.errors import NonFiniteError
    from controlnet.web.service import as_bad_request

    answer = as_bad_request(NonFiniteError("sampling went numerically wrong: the latents hold NaN"))
    assert answer.status == 422 and "numerically wrong" in answer.detail and "internal error" not in answer.detail


# ---------------------------------------------------------------------------------- text that is not UTF-8


@pytest.mark.parametrize(
    "extra, fragments",
    [
        ([b"--prompt", b"a \xff\xfe circle"], ["the value of --prompt", "not UTF-8", "0xff"]),
        ([b"--negative-prompt=bad \xc3"], ["the value of --negative-prompt", "not UTF-8", "0xc3"]),
        ([b"--init-image", b"{d}/caf\xe9.png"], ["the value of --init-image", "not UTF-8", "rename"]),
    ],
)
def test_arguments_that_are_not_utf8_are_named(files, tmp_path, capsys, sampling, extra, fragments):
    """Bytes that are not UTF-8 reach Python's argv as lone surrogates (os.fsdecode's surrogateescape)."""
    extra = [os.fsdecode(a.replace(b"{d}", os.fsencode(files))) for a in extra]
    with unchanged(tmp_path):
        err = assert_user_error(generate(files, tmp_path / "out", *extra), capsys, *fragments)
    assert err.count("\n") == 1
    assert sampling == {"denoise": 0, "load": 0}


def test_api_prompt_with_a_lone_surrogate_is_refused(sd1):
    p, _ = sd1
    for kw in (dict(prompt="a \ud800 b"), dict(negative_prompt="\udcff")):
        with pytest.raises(InputError, match="not valid text.*lone surrogate"):
            p(**{"prompt": "x", **kw}, steps=1, seed=0, width=W, height=H, output_type="latent", progress=False)


# ---------------------------------------------------------------------------------- files and names


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--controlnet", "{d}/cn", "--image", "{d}/missing.png"], ["missing.png", "not found"]),
        (["--controlnet", "{d}/cn", "--image", "{d}/not_an_image.png"], ["not_an_image.png"]),
        (["--controlnet", "{d}/cn", "--image", "{d}/a.png", "--mask", "{d}/not_an_image.png"], ["not_an_image.png"]),
        (["--controlnet", "{d}/cn", "--image", "{d}/a.png", "--mask", "{d}/tall.png"], ["mask is 64×192", "64×48"]),
        (["--controlnet", "{d}/cn", "--image", "{d}/a.png", "--preprocess", "no_such_annotator"], ["no_such_annotator"]),
        (["--controlnet", "{d}/cn"], ["has no --image"]),
        (["--controlnet", "{d}/nope", "--image", "{d}/a.png"], ["ControlNet not found", "nope"]),
        (["--controlnet", "mini:nope", "--image", "{d}/a.png"], ["nope"]),
        (["--controlnet", "{d}/cn_xl", "--image", "{d}/a.png"], ["made for a", "base model"]),
        (["--init-image", "{d}/missing.png"], ["missing.png", "not found"]),
    ],
)
def test_bad_files_and_names_are_refused_before_sampling(files, tmp_path, capsys, sampling, extra, fragments):
    argv = generate(files, tmp_path / "out", *[a.format(d=files) for a in extra], unit=False)
    with unchanged(files), unchanged(tmp_path):
        assert_user_error(argv, capsys, *fragments)
    assert sampling["denoise"] == 0


def test_image_without_controlnet_is_a_usage_error(files, tmp_path, capsys):
    assert_user_error(generate(files, tmp_path, "--image", files / "a.png", unit=False), capsys,
                      "give --controlnet FILE before --image")


def test_missing_base_model_folder(files, tmp_path, capsys):
    argv = generate(files, tmp_path, unit=False)
    argv[argv.index("--model") + 1] = tmp_path / "no_model"
    assert_user_error(argv, capsys, "base model not found", "no_model")
    argv.remove("--model")
    argv.remove(tmp_path / "no_model")
    assert_user_error(argv, capsys, "--model")


@pytest.mark.parametrize("name, fragment", [("damaged.safetensors", "not a readable checkpoint"),
                                            ("damaged.ckpt", "weights_only")])
def test_damaged_single_file_model(files, tmp_path, capsys, sampling, name, fragment):
    argv = generate(files, tmp_path, "--config", files / "base", unit=False)
    argv[argv.index("--model") + 1] = files / name
    assert_user_error(argv, capsys, name, fragment)
    assert sampling["denoise"] == 0


@pytest.mark.parametrize("extra, fragments", [(["--dtype", "fp8"], ["unknown dtype", "fp8"]),
                                              (["--device", "tpu9"], ["unknown device", "tpu9"])])
def test_bad_dtype_or_device_before_loading(files, tmp_path, capsys, extra, fragments):
    assert_user_error(generate(files, tmp_path, *extra), capsys, *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(files, tmp_path, capsys):
    assert_user_error(generate(files, tmp_path, "--device", "cuda"), capsys, "cuda", "not available", "cpu")


# ---------------------------------------------------------------------------------- output place


def test_output_that_is_a_file_fails_before_loading_models(files, tmp_path, capsys, sampling):
    with unchanged(files):
        assert_user_error(generate(files, files / "existing_file"), capsys, "existing_file", "is a file")
    assert sampling == {"denoise": 0, "load": 0}


@needs_posix
def test_read_only_output_fails_before_loading_models(files, tmp_path, capsys, sampling):
    locked = tmp_path / "locked"
    with read_only(locked), unchanged(locked):
        assert_user_error(generate(files, locked, unit=False), capsys, "locked", "not writable")
    assert sampling == {"denoise": 0, "load": 0}


@needs_posix
def test_full_disk_while_saving_leaves_no_partial_png(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    random_hint(8, 8).save(out / "00000-7.png")  # the user's earlier result
    with unchanged(out), full_disk(1024):
        code, _, err = run_cli(generate(files, out), capsys)
    assert code == 1 and "disk is full" in err and "Traceback" not in err, err
    assert sorted(p.name for p in out.iterdir()) == ["00000-7.png"]


# ---------------------------------------------------------------------------------- --from


def _png_with(path, chunk: str | None):
    info = PngImagePlugin.PngInfo()
    if chunk is not None:
        info.add_text("controlnet", chunk)
    random_hint(8, 8).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "chunk, fragments",
    [
        (None, ["has no 'controlnet' text chunk"]),
        ('{"model": "x", "steps": ', ["not valid JSON"]),
        ("[1, 2, 3]", ["damaged", "list"]),
        ('{"model": 5}', ["damaged", "model"]),
        ('{"model": "m", "units": [{"image": "a.png"}]}', ["damaged", "units"]),
        ('{"model": "m", "units": [{"controlnet": "c", "image": 3}]}', ["damaged", "units[0].image"]),
    ],
)
def test_from_png_with_bad_parameters(files, tmp_path, capsys, sampling, chunk, fragments):
    png = _png_with(tmp_path / "old.png", chunk)
    with unchanged(tmp_path):
        assert_user_error(["generate", "--from", png, "-o", tmp_path / "out"], capsys, "--from", *fragments)
    assert sampling == {"denoise": 0, "load": 0}


def test_from_png_with_a_bad_stored_value_names_it(files, tmp_path, capsys, sampling):
    params = {"model": str(files / "base"), "prompt": "x", "steps": 2, "cfg": float("nan"), "seed": 0,
              "width": W, "height": H, "units": []}
    png = _png_with(tmp_path / "old.png", json.dumps(params))  # json writes NaN
    assert_user_error(["generate", "--from", png, "-o", tmp_path / "out"], capsys, "guidance_scale", "finite")
    assert sampling["denoise"] == 0


@pytest.mark.parametrize("name", ["missing.png", "not_an_image.png"])
def test_from_a_missing_or_unreadable_file(files, tmp_path, capsys, name):
    assert_user_error(["generate", "--from", files / name, "-o", tmp_path], capsys, name)


# ---------------------------------------------------------------------------------- the API


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_pipeline("sd1")
    return ControlPipeline.from_diffusers(pipe), tiny_controlnet(pipe)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(guidance_scale=float("inf")), "guidance_scale .* finite"),
        (dict(guidance_scale=float("nan")), "guidance_scale .* finite"),
        (dict(eta=float("nan")), "eta must be a finite"),
        (dict(strength=float("nan")), "strength must be a finite"),
        (dict(num_images=0), "num_images"),
        (dict(steps=1.5), "steps must be a whole number"),
        (dict(steps=True), "steps must be a whole number"),
        (dict(seed=2**33), "seed must be in"),
        (dict(seed="7"), "seed must be a whole number"),
        (dict(width=60, height=48), "multiple of 8"),
        (dict(output_type="jpg"), "output_type"),
        (dict(prompt=None), "prompt must be a string"),
        (dict(prompt=["a", 3]), "prompt must be a string"),
        (dict(negative_prompt=["a", "b"]), "one negative prompt or one per image"),
        (dict(units=["canny.pth"]), "units must be"),
        (dict(latents=torch.zeros(1, 4, 2, 2)), "latents must be a tensor of shape"),
        (dict(latents=torch.full((1, 4, 6, 8), float("nan"))), "NaN"),
        (dict(callback="print"), "callback must be callable"),
        (dict(scheduler=42), "scheduler must be a name"),
    ],
)
def test_bad_call_arguments_are_refused_before_any_work(sd1, monkeypatch, kw, match):
    p, _ = sd1
    monkeypatch.setattr(ControlPipeline, "encode_prompt", lambda *a, **k: pytest.fail("work started"))
    kw = {"prompt": "x", "steps": 1, "seed": 0, "width": W, "height": H, "output_type": "latent", "progress": False, **kw}
    with pytest.raises(InputError, match=match):
        p(**kw)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(weight=float("inf")), "weight must be a finite"),
        (dict(start=float("nan")), "start .* finite"),
        (dict(layer_scales=[1.0, float("nan")]), r"layer_scales\[1\] must be a finite"),
        (dict(layer_scales="1,1"), "layer_scales must be a list"),
        (dict(image=None), "no condition image"),
        (dict(dtype="fp8"), "unknown .*dtype"),
        (dict(mode=3), "unknown control mode"),
        (dict(controlnet=None), "controlnet must be"),
    ],
)
def test_bad_unit_fields_are_refused(sd1, kw, match):
    _, cn = sd1
    kw = {"controlnet": cn, "image": random_hint(W, H), **kw}
    with pytest.raises(InputError, match=match):
        ControlUnit(**kw)


def test_mask_of_another_shape_is_refused_not_stretched(sd1):
    p, cn = sd1
    unit = ControlUnit(cn, random_hint(W, H), mask=np.ones((4 * H, W), np.float32))
    with pytest.raises(InputError, match="the mask is 64×192 but the output is 64×48"):
        p("x", [unit], steps=1, seed=0, width=W, height=H, output_type="latent", progress=False)
    same_shape = ControlUnit(cn, random_hint(W, H), mask=np.ones((H // 2, W // 2), np.float32))  # resized: fine
    assert p("x", [same_shape], steps=1, seed=0, width=W, height=H, output_type="latent", progress=False).images.shape == (1, 4, 6, 8)


# ---------------------------------------------------------------------------------- demo and example


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--samples", "0"], ["samples", "got 0"]),
        (["--threads", "0"], ["--threads", "got 0"]),
        (["-o", "{tmp}/grid.txt"], ["grid.txt", "suffix"]),
        (["-o", "{tmp}"], ["is a folder"]),
        (["--model", "{tmp}/no_model"], ["no_model"]),
    ],
)
def test_demo_bad_options(tmp_path, capsys, sampling, extra, fragments):
    argv = ["demo", "-o", tmp_path / "demo.png", "--quiet", *[a.format(tmp=tmp_path) for a in extra]]
    with unchanged(tmp_path):
        assert_user_error(argv, capsys, *fragments)
    assert sampling == {"denoise": 0, "load": 0}


@needs_posix
def test_demo_into_a_read_only_folder(tmp_path, capsys, sampling):
    locked = tmp_path / "locked"
    with read_only(locked):
        assert_user_error(["demo", "-o", locked / "demo.png", "--quiet"], capsys, "locked", "not writable")
    assert sampling == {"denoise": 0, "load": 0}


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    sys.path.insert(0, os.path.dirname(__file__))
    import test_demo

    return test_demo.random_mini(tmp_path_factory.mktemp("mini") / "mini")


@pytest.mark.parametrize("extra, fragments", [(["--cfg", "nan"], ["guidance_scale", "finite"]),
                                              (["--steps", "0"], ["steps", "got 0"])])
def test_demo_bad_sampling_values(mini, tmp_path, capsys, sampling, extra, fragments):
    with unchanged(tmp_path):
        assert_user_error(["demo", "--model", mini, "-o", tmp_path / "d.png", "--quiet", *extra], capsys, *fragments)
    assert sampling["denoise"] == 0


@pytest.mark.parametrize(
    "make, extra, fragments",
    [
        ("file", [], ["exists", "--overwrite"]),
        (None, ["--layout", "original"], ["original layout is one file"]),
        ("file", ["--layout", "diffusers", "--overwrite"], ["is a file", "folder"]),
        (None, ["--family", "sd9"], ["--family"]),
    ],
)
def test_example_bad_outputs(tmp_path, capsys, make, extra, fragments):
    target = tmp_path / "mine"
    if make == "file":
        target.write_text("the user's file")
    with unchanged(tmp_path):
        assert_user_error(["example", target, *extra], capsys, *fragments)


@needs_posix
def test_example_into_a_read_only_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    with read_only(locked):
        assert_user_error(["example", locked / "cn.safetensors"], capsys, "locked", "not writable")
    assert list(locked.iterdir()) == []
