"""Bad and unusual inputs to the pipeline: clear errors, or conversion instead of a crash."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from controlnet.errors import InputError, MissingFileError
from controlnet.pipeline import ControlPipeline, ControlUnit
from controlnet.pipeline.images import fit, hint_tensor, load_image, resize_mode, to_rgb
from tiny_models import random_hint, tiny_controlnet, tiny_pipeline


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference tests: no autograd (per test, not process-wide, so training tests keep theirs)."""
    with torch.no_grad():
        yield
W, H = 64, 48


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_pipeline("sd1")
    return ControlPipeline.from_diffusers(pipe), tiny_controlnet(pipe)


def run(p, units, **kw):
    kw = {"steps": 1, "seed": 0, "output_type": "latent", "progress": False, **kw}
    return p("x", units, **kw)


# ------------------------------------------------------------------------------------ clear errors


def test_hint_of_the_wrong_size_without_resize_is_refused(sd1):
    p, cn = sd1
    with pytest.raises(InputError, match=r"condition image is 80×48 but the output is 64×48 and resize is off"):
        run(p, [ControlUnit(cn, random_hint(80, H), resize=None)], width=W, height=H)
    assert run(p, [ControlUnit(cn, random_hint(80, H), resize="crop")], width=W, height=H).images.shape[-2:] == (6, 8)


@pytest.mark.parametrize("size", [dict(width=60, height=48), dict(width=64, height=50), dict(width=0, height=48)])
def test_size_not_a_multiple_of_8_is_refused(sd1, size):
    p, cn = sd1
    with pytest.raises(InputError, match="multiple of 8"):
        run(p, [ControlUnit(cn, random_hint(W, H))], **size)


@pytest.mark.parametrize("start, end", [(0.5, 0.5), (0.8, 0.2), (0.0, 1.5), (-0.1, 1.0)])
def test_bad_windows_are_refused(sd1, start, end):
    _, cn = sd1
    with pytest.raises(InputError, match=r"start|end \(a fraction"):
        ControlUnit(cn, random_hint(W, H), start=start, end=end)


def test_end_zero_is_the_off_switch(sd1):
    _, cn = sd1
    assert ControlUnit(cn, random_hint(W, H), start=0.0, end=0.0).off


@pytest.mark.parametrize("other", ["sdxl", "sd2"])
def test_controlnet_of_another_family_is_refused(sd1, other):
    p, cn = sd1
    foreign = tiny_controlnet(tiny_pipeline(other))
    with pytest.raises(InputError, match="made for a .* base model but the base model is"):
        run(p, [ControlUnit(foreign, random_hint(W, H))])
    other_pipe = ControlPipeline.from_diffusers(tiny_pipeline(other))
    with pytest.raises(InputError, match="ControlNet trained for"):
        run(other_pipe, [ControlUnit(cn, random_hint(W, H))])


def test_hint_scale_must_match_the_vae(sd1):
    p, _ = sd1
    cn = tiny_controlnet(tiny_pipeline("sd1"))
    small = type(cn).from_unet(p.unet, vae_scale_factor=2)
    with pytest.raises(InputError, match="hints 2x the latent size"):
        run(p, [ControlUnit(small, random_hint(W, H))])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(mode="stronger"), "unknown control mode"),
        (dict(resize="zoom"), "unknown resize mode"),
        (dict(weight=float("nan")), "finite number"),
        (dict(weight="strong"), "must be a number"),
        (dict(weight=-0.5), "weight must be in"),
    ],
)
def test_bad_unit_options_are_refused(sd1, kw, match):
    _, cn = sd1
    with pytest.raises(InputError, match=match):
        ControlUnit(cn, random_hint(W, H), **kw)


def test_bad_call_options_are_refused(sd1):
    p, cn = sd1
    unit = ControlUnit(cn, random_hint(W, H))
    with pytest.raises(InputError, match="layer_scales has 3 values; this ControlNet has 7"):
        run(p, [ControlUnit(cn, random_hint(W, H), layer_scales=[1, 1, 1])])
    with pytest.raises(InputError, match="unknown scheduler"):
        run(p, [unit], scheduler="magic")
    with pytest.raises(InputError, match="steps"):
        run(p, [unit], steps=0)
    with pytest.raises(InputError, match="seed"):
        run(p, [unit], seed=-1)
    with pytest.raises(InputError, match="controlnet must be"):
        ControlUnit("canny.safetensors", random_hint(W, H))
    with pytest.raises(InputError, match="one condition image or one per image"):
        run(p, [ControlUnit(cn, [random_hint(W, H)] * 3)], num_images=2)


# ------------------------------------------------------------------------------------ images converted, not crashed


def _images():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    grey = rgb[:, :, 0]
    alpha = np.full((H, W), 128, np.uint8)
    return {
        "L": Image.fromarray(grey, "L"),
        "LA": Image.fromarray(np.dstack([grey, alpha]), "LA"),
        "RGBA": Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
        "P": Image.fromarray(rgb).convert("P"),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257),
        "CMYK": Image.fromarray(rgb).convert("CMYK"),
        "1": Image.fromarray(grey > 128),
        "uint16 array": rgb.astype(np.uint16) * 257,
        "float array": rgb / 255.0,
        "bool array": grey > 128,
        "HxWx1 array": grey[:, :, None],
        "tensor": torch.from_numpy(rgb).permute(2, 0, 1) / 255.0,
    }


@pytest.mark.parametrize("kind", list(_images()))
def test_any_image_kind_becomes_an_rgb_hint(sd1, kind):
    p, cn = sd1
    image = _images()[kind]
    x = to_rgb(image)
    assert x.shape == (H, W, 3) and x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    out = run(p, [ControlUnit(cn, image, resize=None)])
    assert torch.isfinite(out.images).all()


def test_alpha_is_composited_on_white_and_grey_replicated():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent black -> white paper
    assert np.allclose(to_rgb(rgba), 1.0)
    rgba[..., 3] = 255
    assert np.allclose(to_rgb(rgba), 0.0)
    grey = np.array([[0, 255]], np.uint8)
    assert np.allclose(to_rgb(grey), [[[0, 0, 0], [1, 1, 1]]])


def test_sixteen_bit_files_keep_their_precision(tmp_path):
    depth = (np.arange(W * H, dtype=np.uint32) * 13 % 65536).astype(np.uint16).reshape(H, W)
    cv2.imwrite(str(tmp_path / "grey16.png"), depth)
    colour = np.dstack([depth, depth[::-1], 65535 - depth])
    cv2.imwrite(str(tmp_path / "rgb16.png"), colour[:, :, ::-1])  # cv2 writes BGR
    grey = to_rgb(tmp_path / "grey16.png")
    assert np.allclose(grey[:, :, 0], depth / 65535.0, atol=1e-6)  # not rounded to 8 bits
    rgb = to_rgb(str(tmp_path / "rgb16.png"))
    assert np.allclose(rgb, colour / 65535.0, atol=1e-6)
    assert load_image(tmp_path / "rgb16.png").dtype == np.uint16


def test_unreadable_or_missing_images_are_clear_errors(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(InputError, match="cannot read"):
        to_rgb(tmp_path / "x.png")
    with pytest.raises(MissingFileError, match="not found"):
        to_rgb(tmp_path / "nope.png")
    with pytest.raises(InputError, match=r"in \[0, 1\]"):
        to_rgb(np.full((4, 4, 3), 2.0))
    with pytest.raises(InputError, match="H×W"):
        to_rgb(np.zeros((4, 4, 5)))


# ------------------------------------------------------------------------------------ resize modes


def test_resize_modes_follow_a1111():
    wide = np.zeros((10, 40, 3), np.float32)
    wide[:, 17:23] = 1.0  # a white band in the middle
    wide[:, :2] = 0.5  # left border grey: the median border colour stays black (most border pixels)
    assert resize_mode("Crop and Resize") == resize_mode(1) == "crop_and_resize"
    assert resize_mode("outer fit") == "resize_and_fill" and resize_mode("none") is None
    stretched = fit(wide, (20, 20), "just_resize")
    assert stretched.shape == (20, 20, 3)
    cropped = fit(wide, (20, 20), "crop_and_resize")  # scale 2x to 80x20, keep the middle 20 columns
    assert cropped.shape == (20, 20, 3) and cropped[:, 5:15].min() > 0.99 and cropped[:, [0, 1, -2, -1]].max() < 0.01
    filled = fit(wide, (20, 20), "resize_and_fill")  # scale 0.5x to 20x5, centred on a 20x20 canvas
    assert filled.shape == (20, 20, 3) and np.allclose(filled[:7], 0.0) and filled[7:12, 9:11].min() > 0.9
    white = np.ones((10, 40, 3), np.float32)
    assert np.allclose(fit(white, (20, 20), "resize_and_fill"), 1.0)  # filled with the border colour, not black
    hint = hint_tensor(Image.fromarray((wide * 255).astype(np.uint8)), 20, 20, "crop")
    assert hint.shape == (1, 3, 20, 20)


# ------------------------------------------------------------------------------------ loading


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    pipe = tiny_pipeline("sd2")
    pipe.save_pretrained(folder)
    return folder, pipe


def test_folder_loads_and_samples_like_the_components(saved):
    folder, pipe = saved
    loaded = ControlPipeline.from_pretrained(folder)
    assert loaded.kind == "sd" and loaded.scheduler.config.prediction_type == "v_prediction"
    a = run(loaded, [], width=W, height=H).images
    b = run(ControlPipeline.from_diffusers(pipe), [], width=W, height=H).images
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_missing_pieces_name_the_file_to_provide(saved, tmp_path):
    folder, _ = saved
    with pytest.raises(MissingFileError, match="no model_index.json"):
        ControlPipeline.from_pretrained(tmp_path)
    with pytest.raises(MissingFileError, match="not found"):
        ControlPipeline.from_pretrained(tmp_path / "nowhere")
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(MissingFileError, match="vae is missing"):
        ControlPipeline.from_pretrained(broken)
    shutil.copytree(folder / "vae", broken / "vae")
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(MissingFileError, match="unet has no weights"):
        ControlPipeline.from_pretrained(broken)
    (broken / "model.safetensors").write_bytes(b"")
    with pytest.raises(MissingFileError, match="config=<a local diffusers-layout folder"):
        ControlPipeline.from_pretrained(broken / "model.safetensors")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]


@pytest.mark.parametrize("content, words", [(b'{"unet": ', "not valid JSON"), (b"[" * 100_000, "nested too deeply")])
def test_a_damaged_model_index_is_named(tmp_path, content, words):
    from controlnet.errors import CheckpointError
    from controlnet.pipeline.loading import read_model_index

    (tmp_path / "model_index.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=f"model_index.json.*{words}"):
        read_model_index(tmp_path)


def test_single_file_checkpoints_are_checked_against_their_config(saved, tmp_path):
    from safetensors.torch import save_file

    from controlnet.errors import CheckpointError

    folder, _ = saved
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, tmp_path / "xl.safetensors")
    with pytest.raises(InputError, match="is an sdxl checkpoint but the config folder .* describes an sd model"):
        ControlPipeline.from_pretrained(tmp_path / "xl.safetensors", config=folder)
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, tmp_path / "sd.safetensors")
    with pytest.raises(CheckpointError, match="cannot load .*sd.safetensors with the config in"):
        ControlPipeline.from_pretrained(tmp_path / "sd.safetensors", config=folder)
