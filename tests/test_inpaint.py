"""Inpainting (issue 14.1): parity with diffusers' StableDiffusionControlNetInpaintPipeline for 4- and
9-channel U-Nets, the -1 inpaint hint, the kept outside, inpaint_only, outpainting, bad inputs."""

import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionControlNetInpaintPipeline
from PIL import Image

from bad_input_tools import assert_user_error, run_cli, unchanged
from controlnet.annotators import annotate
from controlnet.errors import InputError
from controlnet.pipeline import ControlPipeline, ControlUnit
from controlnet.pipeline.images import hint_tensor
from controlnet.pipeline.inpaint import inpaint_map
from tiny_models import random_hint, tiny_controlnet, tiny_pipeline

W, H = 64, 48
BOX = (slice(16, 40), slice(24, 56))  # rows, columns of the repainted area


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


def deterministic_posterior(vae):
    """Posterior std ~3e-7: diffusers samples the encoding with the generator, we take its mean."""
    c = vae.config.latent_channels
    vae.quant_conv.weight.data[c:] = 0
    vae.quant_conv.bias.data[c:] = -60.0  # log-variance, clamped to -30 by diffusers


@pytest.fixture(scope="module")
def models():
    four = tiny_pipeline("sd1")
    nine = tiny_pipeline("sd1", unet_config={"in_channels": 9})
    for p in (four, nine):
        deterministic_posterior(p.vae)
    return {4: four, 9: nine}, tiny_controlnet(four, seed=1)


@pytest.fixture(scope="module")
def picture():
    return random_hint(W, H, seed=3)


@pytest.fixture(scope="module")
def mask():
    m = np.zeros((H, W), np.uint8)
    m[BOX] = 255
    return Image.fromarray(m, "L")


def outside(mask) -> np.ndarray:
    return np.array(mask) == 0


def noise(channels: int = 4) -> torch.Tensor:
    return torch.randn(1, channels, H // 8, W // 8, generator=torch.Generator().manual_seed(0))


def ours(pipe, units, picture, mask, **kw):
    kw.setdefault("latents", noise())
    return ControlPipeline.from_diffusers(pipe)("a red cube", units, steps=3, guidance_scale=7.0, init_image=picture,
                                                mask_image=mask, output_type="np", progress=False, **kw)


@pytest.mark.parametrize("channels", [4, 9])
def test_parity_with_diffusers_inpaint_pipeline(models, picture, mask, channels):
    pipes, cn = models
    pipe = pipes[channels]
    out = ours(pipe, [ControlUnit(cn, inpaint_map(picture, mask))], picture, mask)
    control = torch.from_numpy(np.array(picture) / 255.0).permute(2, 0, 1)[None].float()
    control[:, :, np.array(mask) > 127] = -1.0  # diffusers' make_inpaint_condition
    ref = StableDiffusionControlNetInpaintPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        controlnet=cn.to_diffusers().eval(), scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
        image_encoder=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    expected = ref("a red cube", image=picture, mask_image=mask, control_image=control, num_inference_steps=3,
                   guidance_scale=7.0, controlnet_conditioning_scale=1.0, latents=noise(), height=H, width=W,
                   output_type="np").images
    assert np.abs(out.images - expected).max() < 1e-4
    assert np.abs(out.images - ours(pipe, [], picture, mask).images).max() > 1e-3  # the ControlNet acts


def test_inpaint_map_reads_as_minus_one_in_the_hint(picture, mask):
    masked = np.array(mask) > 127
    for condition in (inpaint_map(picture, mask), annotate("inpaint", np.array(picture), mask=np.array(mask))):
        hint = hint_tensor(condition, W, H)[0].permute(1, 2, 0).numpy()
        assert (hint[masked] == -1).all()
        assert np.allclose(hint[~masked], np.array(picture)[~masked] / 255.0)
    # a plain RGBA array or file with the same alpha is transparency, composited on white (as in training)
    plain = hint_tensor(np.asarray(inpaint_map(picture, mask)).copy(), W, H)[0]
    assert (plain >= 0).all() and (plain[:, ~masked] == 1).all()
    # diffusers' -1 tensor works as is, and resize_and_fill marks the filled border -1 too
    minus = torch.from_numpy(hint_tensor(inpaint_map(picture, mask), W, H).numpy())
    assert torch.equal(hint_tensor(minus, W, H), minus)
    wide = hint_tensor(minus, W, 2 * H, "resize_and_fill")[0]
    assert (wide[:, : H // 2] == -1).all() and (wide[:, -H // 2:] == -1).all()
    assert (wide[:, H // 2: -H // 2][:, ~masked] >= 0).all()


@pytest.mark.parametrize("mode", ["blend", "inpaint_only"])
def test_pixels_outside_the_mask_are_the_original(models, picture, mask, mode):
    pipes, cn = models
    out = ours(pipes[4], [ControlUnit(cn, inpaint_map(picture, mask))], picture, mask, inpaint_mode=mode, mask_blur=0)
    got = (out.images[0] * 255).round().astype(np.uint8)
    keep = outside(mask)
    assert np.array_equal(got[keep], np.array(picture)[keep])
    assert np.abs(got[~keep].astype(int) - np.array(picture)[~keep]).mean() > 10  # the inside is repainted
    blurred = ours(pipes[4], [], picture, mask, inpaint_mode=mode, mask_blur=2.0).images[0]
    far = np.ones((H, W), bool)
    far[BOX[0].start - 12: BOX[0].stop + 12, BOX[1].start - 12: BOX[1].stop + 12] = False  # beyond 2σ dilation + blur
    assert np.array_equal((blurred[far] * 255).round().astype(np.uint8), np.array(picture)[far])


def test_inpaint_only_differs_from_blend(models, picture, mask):
    pipes, cn = models
    unit = ControlUnit(cn, inpaint_map(picture, mask))
    blend = ours(pipes[4], [unit], picture, mask).images
    only = ours(pipes[4], [unit], picture, mask, inpaint_mode="inpaint_only").images
    assert np.abs(blend - only)[0][~outside(mask)].max() > 1e-2


@pytest.mark.parametrize("family", ["sd1", "sd2"])  # ε and v-prediction
def test_inpaint_only_keeps_the_init_latent_outside(models, picture, mask, family):
    pipe = ControlPipeline.from_diffusers(models[0][4] if family == "sd1" else tiny_pipeline("sd2"))
    init = pipe.encode_image(picture, W, H)[0]
    keep = torch.from_numpy(outside(mask)[4::8, 4::8])  # the latent cells wholly outside the box
    gap = {}
    for mode in ("inpaint_only", None):
        kw = dict(init_image=picture, mask_image=mask, inpaint_mode=mode) if mode else dict(width=W, height=H)
        latents = pipe("x", [], steps=10, seed=0, scheduler="euler", output_type="latent", progress=False, **kw).images[0]
        gap[mode] = float((latents - init)[:, keep].abs().mean())
    assert gap["inpaint_only"] < 1e-3 * gap[None]  # Euler's last step lands on the x0 pinned to the original


def test_outpainting_through_resize_and_fill(models, picture):
    pipes, _ = models
    strip = np.array(picture)[: H // 2]  # 64×24 into 64×48: 12 filled rows above and below
    out = ours(pipes[4], [], strip, None, init_resize="resize_and_fill", mask_blur=0, width=W, height=H).images[0]
    got = (out * 255).round().astype(np.uint8)
    assert np.array_equal(got[12:36], strip)
    fill = np.median(np.concatenate([strip[0], strip[-1], strip[:, 0], strip[:, -1]]), axis=0)
    assert np.abs(got[:12].astype(float) - fill).mean() > 5 and np.abs(got[36:].astype(float) - fill).mean() > 5


# ------------------------------------------------------------------------------------------ bad inputs

def _bad_masks(mask):
    grey = np.array(mask).copy()
    grey[0, 0] = 128
    return {"non-binary": (grey, "must be binary"), "wrong size": (np.array(mask)[:, :32], "32×48"),
            "empty": (np.zeros((H, W), np.uint8), "empty")}


@pytest.mark.parametrize("case", ["non-binary", "wrong size", "empty"])
def test_bad_masks_are_refused(models, picture, mask, case):
    pipes, cn = models
    bad, fragment = _bad_masks(mask)[case]
    with pytest.raises(InputError, match=fragment):
        ours(pipes[4], [], picture, bad)
    with pytest.raises(InputError, match=fragment):
        inpaint_map(picture, bad) if case != "empty" else annotate("inpaint", np.array(picture), mask=bad)


def test_bad_calls_are_refused(models, picture, mask):
    pipes, _ = models
    p4, p9 = (ControlPipeline.from_diffusers(pipes[c]) for c in (4, 9))
    cases = [
        (lambda: p4("x", steps=2, mask_image=mask), "mask_image needs init_image"),
        (lambda: p9("x", steps=2), "9 input channels"),
        (lambda: p9("x", steps=2, init_image=picture), "give mask_image too"),
        (lambda: p4("x", steps=2, init_image=picture, mask_image=mask, inpaint_mode="fill"), "unknown inpaint_mode"),
        (lambda: p4("x", steps=2, init_image=picture, mask_image=mask, mask_blur=-1), "mask_blur"),
        (lambda: inpaint_map(picture, None), "needs a mask"),
        (lambda: p4("x", steps=2, init_image=picture, mask_image=mask, width=32, height=32, init_resize=None),
         "init_resize is none"),
    ]
    for call, fragment in cases:
        with pytest.raises(InputError, match=fragment):
            call()


@pytest.fixture(scope="module")
def place(tmp_path_factory, models, picture, mask):
    d = tmp_path_factory.mktemp("inpaint_cli")
    models[0][4].save_pretrained(d / "base")
    models[0][9].save_pretrained(d / "base9")
    models[1].to_diffusers().save_pretrained(d / "cn")
    picture.save(d / "photo.png")
    mask.save(d / "mask.png")
    for name, (arr, _) in _bad_masks(mask).items():
        Image.fromarray(arr).save(d / f"{name.replace(' ', '_')}.png")
    return d


def _cli(d, *extra):
    return ["generate", "--model", d / "base", "--prompt", "x", "--steps", "2", "--seed", "1", "-o", d / "out",
            "--controlnet", d / "cn", "--image", d / "photo.png", "--preprocess", "inpaint", *extra]


@pytest.mark.parametrize(("extra", "fragments"), [
    (["--init-image", "photo.png", "--inpaint-mask", "non-binary.png"], ["must be binary"]),
    (["--init-image", "photo.png", "--inpaint-mask", "wrong_size.png"], ["32×48", "picture's size"]),
    (["--init-image", "photo.png", "--inpaint-mask", "empty.png"], ["empty"]),
    (["--inpaint-mask", "mask.png"], ["needs init_image"]),
    (["--init-image", "photo.png", "--inpaint-mask", "mask.png", "--inpaint-mode", "fill"], ["inpaint_mode"]),
    (["--init-image", "photo.png"], ["needs a mask", "--inpaint-mask"]),
])
def test_cli_bad_inputs(place, capsys, extra, fragments):
    extra = [place / e if e.endswith(".png") else e for e in extra]
    with unchanged(place):
        assert_user_error(_cli(place, *extra), capsys, *fragments)


def test_cli_nine_channel_base_without_a_mask(place, capsys):
    argv = ["generate", "--model", place / "base9", "--prompt", "x", "--steps", "2", "-o", place / "out"]
    with unchanged(place):
        assert_user_error(argv, capsys, "9 input channels", "--init-image", "--inpaint-mask")
        assert_user_error([*argv, "--init-image", place / "photo.png"], capsys, "9 input channels", "--inpaint-mask")


def test_cli_inpaints_and_records_its_parameters(place, capsys):
    code, out, err = run_cli(_cli(place, "--init-image", place / "photo.png", "--inpaint-mask", place / "mask.png",
                                  "--inpaint-mode", "inpaint_only", "--mask-blur", "0", "--no-grid"), capsys)
    assert code == 0, err
    written = Image.open(out.split()[-1])
    params = json.loads(written.text["controlnet"])
    assert params["inpaint_mask"] == str((place / "mask.png").resolve())
    assert params["inpaint_mode"] == "inpaint_only" and params["mask_blur"] == 0
    keep = outside(Image.open(place / "mask.png"))
    assert np.array_equal(np.array(written)[keep], np.array(Image.open(place / "photo.png"))[keep])
    code, out, err = run_cli(["generate", "--from", out.split()[-1], "-o", place / "again", "--no-grid"], capsys)
    assert code == 0, err
    assert np.array_equal(np.array(Image.open(out.split()[-1])), np.array(written))


def test_fill_masked_paints_the_mask_from_its_surroundings():
    """A1111's inpainting_fill "fill" (the server's default): the masked area takes the colours around it,
    the nearer ones more; outside the mask the picture is unchanged."""
    from controlnet.pipeline.inpaint import fill_masked

    picture = np.zeros((H, W, 3), np.uint8)
    picture[:, : W // 2] = (0, 0, 255)  # blue left half, green right half, a red square across both
    picture[:, W // 2:] = (0, 255, 0)
    picture[BOX] = (255, 0, 0)
    mask = np.zeros((H, W), bool)
    mask[BOX] = True
    filled = fill_masked(picture, mask)
    assert filled.shape == (H, W, 3) and filled.dtype == np.float32
    assert np.array_equal(filled[~mask], picture[~mask] / np.float32(255))
    inside = filled[BOX]
    assert inside[:, :, 0].max() < 0.05  # no trace of the red that was there
    left, right = inside[:, 0], inside[:, -1]
    assert (left[:, 2] > left[:, 1]).all() and (right[:, 1] > right[:, 2]).all()  # the nearer colour wins
    with pytest.raises(InputError, match="the mask"):
        fill_masked(picture, mask[:10])
