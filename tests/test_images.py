"""The one image module: training, sampling and the annotators read a picture the same way."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from controlnet import images
from controlnet.annotators import to_rgb as annotator_rgb
from controlnet.errors import InputError
from controlnet.pipeline.images import hint_tensor
from controlnet.training.data import BadSample, Processing, decode_rgb

SIZE = 64


def header_only_png(path, width: int, height: int) -> None:
    """A PNG whose header claims width×height pixels and holds none: a decompression bomb's shape."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def condition_png(path, kind: str) -> None:
    """A condition map with transparency, saved in one of the ways people's tools save them."""
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    alpha = np.where(rng.random((SIZE, SIZE)) < 0.5, 0, 255).astype(np.uint8)  # transparent / opaque
    if kind == "RGBA":
        Image.fromarray(np.dstack([colour, alpha]), "RGBA").save(path)
    elif kind == "RGBA partial":
        Image.fromarray(np.dstack([colour, rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)]), "RGBA").save(path)
    elif kind == "LA":
        Image.fromarray(np.dstack([colour[:, :, 0], alpha]), "LA").save(path)
    elif kind == "P":
        Image.fromarray(np.dstack([colour, alpha]), "RGBA").quantize(16).save(path, transparency=0)


def training_hint(tmp_path, condition: str) -> torch.Tensor:
    Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(tmp_path / "target.png")
    record = {"target": "target.png", "condition": condition, "prompt": "a shape", "key": "0"}
    return Processing(resolution=SIZE)(record, tmp_path)["hint"]


@pytest.mark.parametrize("kind", ["RGBA", "LA", "P"])
def test_transparent_condition_gives_the_same_hint_in_training_and_sampling(tmp_path, kind):
    condition_png(tmp_path / "cond.png", kind)
    trained = training_hint(tmp_path, "cond.png")
    sampled = hint_tensor(tmp_path / "cond.png", SIZE, SIZE)[0]
    assert trained.shape == sampled.shape == (3, SIZE, SIZE)
    assert torch.equal(trained, sampled)
    assert (sampled == 1.0).all(dim=0).any(), "transparent pixels read as white paper"


def test_partial_alpha_differs_only_by_the_trainers_8_bit_rounding(tmp_path):
    condition_png(tmp_path / "cond.png", "RGBA partial")
    trained = training_hint(tmp_path, "cond.png")
    sampled = hint_tensor(tmp_path / "cond.png", SIZE, SIZE)[0]
    assert (trained - sampled).abs().max() <= 0.5 / 255 + 1e-6  # half a grey level: rounding, nothing else


def test_annotators_and_trainer_read_the_same_8_bit_rgb(tmp_path):
    condition_png(tmp_path / "cond.png", "RGBA partial")
    expected = (images.to_rgb(tmp_path / "cond.png") * 255).round().astype(np.uint8)
    assert np.array_equal(annotator_rgb(tmp_path / "cond.png"), expected)
    assert np.array_equal(decode_rgb("cond.png", tmp_path), expected)
    assert np.array_equal(decode_rgb((tmp_path / "cond.png").read_bytes()), expected)


def test_sixteen_bit_colour_reaches_the_trainer_scaled_not_clipped(tmp_path):
    import cv2

    deep = np.full((8, 8, 3), 40000, np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), deep)
    assert images.load_image(tmp_path / "deep.png").dtype == np.uint16
    assert (decode_rgb(tmp_path / "deep.png") == round(40000 / 257)).all()


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    header_only_png(tmp_path / "bomb.png", 20_000, 20_000)  # PIL's own limit would raise its error
    with pytest.raises(InputError, match=r"bomb\.png holds 400,000,000 pixels"):
        images.load_image(tmp_path / "bomb.png")
    header_only_png(tmp_path / "big.png", 13_000, 12_000)  # under PIL's limit, over ours
    with pytest.raises(InputError, match=r"big\.png is 13000×12000 = 156,000,000 pixels"):
        images.to_rgb(tmp_path / "big.png")
    with pytest.raises(BadSample, match="pixels"):
        decode_rgb(tmp_path / "bomb.png")


def test_the_pixel_limit_is_one_setting(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "small.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 500)
    for read in (images.to_rgb, annotator_rgb, lambda p: hint_tensor(p, 8, 8)):
        with pytest.raises(InputError, match=r"small\.png is 30×20 = 600 pixels"):
            read(tmp_path / "small.png")
    with pytest.raises(InputError, match="600 pixels"):
        images.to_rgb(Image.open(tmp_path / "small.png"))


def test_resize_mode_names_are_listed_once():
    assert images.resize_mode("Crop and Resize") == images.resize_mode(1) == "crop_and_resize"
    assert images.resize_mode("outer fit") == "resize_and_fill" and images.resize_mode("none") is None
    with pytest.raises(InputError, match="just_resize, crop_and_resize, resize_and_fill"):
        images.resize_mode("squash")


def test_nan_in_a_float_image_is_named():
    x = np.full((4, 4, 3), 0.5, np.float32)
    x[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        images.to_rgb(x)
    with pytest.raises(InputError, match="NaN or infinite"):
        annotator_rgb(x)
