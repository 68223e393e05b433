"""Bad inputs to `controlnet annotate` and `annotate()`: one line naming the input (exit 2, no
traceback), nothing silently accepted, the user's files untouched and no partial file left. Odd
but valid pictures (1×1, 16-bit, CMYK, palette, grey+alpha) work."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, full_disk, needs_posix, read_only, run_cli, unchanged
from controlnet import images
from controlnet.annotators import annotate
from controlnet.errors import InputError

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (40, 60, 3), dtype=np.uint8)


def header_only_png(path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture
def place(tmp_path):
    """A user's folder: a photo, a mask, broken and odd files, and an earlier result to protect."""
    Image.fromarray(PHOTO).save(tmp_path / "photo.png")
    mask = np.zeros(PHOTO.shape[:2], np.uint8)
    mask[10:30, 20:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    (tmp_path / "notes.png").write_text("this is text, not a picture")
    (tmp_path / "empty.png").write_bytes(b"")
    good = (tmp_path / "photo.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    header_only_png(tmp_path / "bomb.png", 20_000, 20_000)
    header_only_png(tmp_path / "zero.png", 0, 0)
    (tmp_path / "folder.png").mkdir()
    Image.fromarray(PHOTO[::-1]).save(tmp_path / "mine.jpg")
    Image.fromarray(PHOTO[::-1]).save(tmp_path / "mine.png")
    return tmp_path


def cli(place, name="canny", image="photo.png", out="out.png", *extra):
    return ["annotate", name, str(place / image), "-o", str(place / out), *extra]


# ------------------------------------------------------------------------ names and parameters

PARAMS = [
    ("cany", [], ["unknown annotator 'cany'", "Did you mean canny"]),
    ("canny", ["--param", "low_threshold"], ["KEY=VALUE", "low_threshold"]),
    ("canny", ["--param", "=5"], ["KEY=VALUE"]),
    ("canny", ["--param", "sigma=3"], ["no parameter sigma", "valid: low_threshold"]),
    ("canny", ["--param", "low_threshold=abc"], ["low_threshold", "expects a int", "abc"]),
    ("canny", ["--param", "low_threshold=1.5"], ["low_threshold", "1.5"]),
    ("canny", ["--param", "low_threshold=-5"], ["low_threshold", "[0, 1000]", "-5"]),
    ("canny", ["--param", "low_threshold=5000"], ["low_threshold", "[0, 1000]", "5000"]),
    ("canny", ["--param", "low_threshold=50", "--param", "low_threshold=60"], ["low_threshold", "twice"]),
    ("mlsd", ["--param", "value_threshold=nan"], ["value_threshold", "finite", "nan"]),
    ("mlsd", ["--param", "value_threshold=1.5"], ["value_threshold", "[0, 1]", "1.5"]),
    ("mlsd", ["--param", "distance_threshold=-1"], ["distance_threshold", "-1"]),
    ("mlsd", ["--param", "max_lines=0"], ["max_lines", "got 0"]),
    ("recolor_luminance", ["--param", "gamma_correction=nan"], ["gamma_correction", "finite"]),
    ("recolor_luminance", ["--param", "gamma_correction=inf"], ["gamma_correction", "finite"]),
    ("normal_from_depth", ["--param", "z=nan"], ["'z'", "finite"]),
    ("normal_from_depth", ["--param", "z=inf"], ["'z'", "finite"]),
    ("normal_from_depth", ["--param", "z=-inf"], ["'z'", "finite"]),
    ("blur_gaussian", ["--param", "sigma=nan"], ["sigma", "finite"]),
    ("blur_gaussian", ["--param", "sigma=-1"], ["sigma", "-1"]),
    ("tile_resample", ["--param", "downsample_rate=0"], ["downsample_rate", "got 0"]),
    ("shuffle", ["--param", "cell_size=0"], ["cell_size", "got 0"]),
    ("shuffle", ["--param", "seed=-1"], ["seed", "got -1"]),
    ("softedge", ["--param", "safe=maybe"], ["safe", "expects a bool", "maybe"]),
    ("canny", ["--resolution", "0"], ["resolution", "16..8192"]),
    ("canny", ["--resolution", "-5"], ["resolution", "-5"]),
    ("canny", ["--resolution", "nan"], ["--resolution", "invalid int value"]),
    ("canny", ["--width", "-3"], ["width", "-3"]),
    ("canny", ["--height", "0"], ["height", "0"]),
    ("canny", ["--width", "100000"], ["width", "100000"]),
    ("canny", ["--resize-mode", "squash"], ["unknown resize mode 'squash'", "crop_and_resize"]),
    ("canny", ["--resize-mode", "none"], ["resize mode 'none'", "always fitted"]),
    ("canny", ["--device", "cuda:99"], ["device cuda:99 is not available"]),
    ("canny", ["--device", "gpu0"], ["unknown device 'gpu0'", "use cpu, cuda"]),
    ("canny", ["--device", "meta"], ["device meta holds no data", "use cpu"]),
]


@pytest.mark.parametrize(("name", "extra", "fragments"), PARAMS, ids=[f"{n}{' '.join(e)}" for n, e, _ in PARAMS])
def test_bad_names_and_parameters(place, capsys, name, extra, fragments):
    with unchanged(place):
        assert_user_error(cli(place, name, "photo.png", "out.png", *extra), capsys, *fragments)


# ------------------------------------------------------------------------------- input files

INPUTS = [
    ("missing.png", ["image file not found", "missing.png"]),
    ("folder.png", ["folder.png", "is a folder"]),
    ("notes.png", ["cannot read", "notes.png", "not a picture"]),
    ("empty.png", ["cannot read", "empty.png"]),
    ("truncated.png", ["cannot read", "truncated.png", "damaged or cut short"]),
    ("zero.png", ["cannot read", "zero.png"]),
    ("bomb.png", ["bomb.png", "400,000,000 pixels", "decompression bomb"]),
]


@pytest.mark.parametrize(("image", "fragments"), INPUTS, ids=[i for i, _ in INPUTS])
def test_bad_input_files(place, capsys, image, fragments):
    with unchanged(place):
        assert_user_error(cli(place, "canny", image), capsys, *fragments)


def test_pixel_limit_applies_before_decoding(place, capsys, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)  # the photo is 60×40 = 2400 pixels
    with unchanged(place):
        assert_user_error(cli(place), capsys, "photo.png", "2,400 pixels", "downscale")


@pytest.mark.parametrize(("mask", "fragments"), [
    ("missing.png", ["parameter 'mask'", "image file not found"]),
    ("notes.png", ["parameter 'mask'", "cannot read"]),
    ("photo.png", []),  # a photo as mask: white-ish pixels repaint, it works
])
def test_inpaint_mask_files(place, capsys, mask, fragments):
    argv = cli(place, "inpaint", "photo.png", "out.png", "--param", f"mask={place / mask}")
    if not fragments:
        assert run_cli(argv, capsys)[0] == 0
        return
    with unchanged(place):
        assert_user_error(argv, capsys, *fragments)


# ----------------------------------------------------------------- odd but valid pictures work

def _odd_pictures(folder):
    grey = PHOTO[:, :, 0]
    alpha = np.where(grey > 100, 255, 0).astype(np.uint8)
    Image.fromarray(PHOTO[:1, :1]).save(folder / "one_pixel.png")
    cv2.imwrite(str(folder / "grey16.png"), grey.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "rgb16.png"), PHOTO[:, :, ::-1].astype(np.uint16) * 257)  # cv2 writes BGR
    Image.fromarray(PHOTO).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(PHOTO).quantize(32).save(folder / "palette.png")
    Image.fromarray(np.dstack([grey, alpha]), "LA").save(folder / "grey_alpha.png")
    Image.fromarray(grey > 128).save(folder / "bilevel.png")
    return ["one_pixel.png", "grey16.png", "rgb16.png", "cmyk.jpg", "palette.png", "grey_alpha.png", "bilevel.png"]


@pytest.mark.parametrize("index", range(7))
def test_odd_pictures_work(place, capsys, index):
    name = _odd_pictures(place)[index]
    code, out, err = run_cli(cli(place, "canny", name, "out.png"), capsys)
    assert code == 0 and "wrote" in out, err
    expected = np.array(Image.open(place / name)).shape[:2] if name != "rgb16.png" else PHOTO.shape[:2]
    assert np.array(Image.open(place / "out.png")).shape == (*expected, 3)


def test_sixteen_bit_reads_like_its_eight_bit_twin(place):
    _odd_pictures(place)
    assert np.array_equal(annotate("canny", place / "rgb16.png"), annotate("canny", PHOTO))


# ------------------------------------------------------------------------------- outputs

def test_rgba_map_as_jpeg_leaves_the_old_file(place, capsys):
    """Issue 10: `annotate inpaint ... -o mine.jpg` left mine.jpg at 0 bytes."""
    with unchanged(place):
        assert_user_error(cli(place, "inpaint", "photo.png", "mine.jpg", "--param", f"mask={place / 'mask.png'}"),
                          capsys, "mine.jpg", "RGBA", "JPEG", ".png")


@pytest.mark.parametrize(("out", "fragments"), [
    ("folder.png", ["folder.png", "is a folder"]),
    ("out.unknownext", ["out.unknownext", "unknown image suffix"]),
    ("out", ["unknown image suffix"]),
])
def test_bad_output_names(place, capsys, monkeypatch, out, fragments):
    import controlnet.annotators as annotators

    def never(*args, **kwargs):
        raise AssertionError("the annotator ran before the output name was checked")

    monkeypatch.setattr(annotators, "annotate", never)
    with unchanged(place):
        assert_user_error(cli(place, "canny", "photo.png", out), capsys, *fragments)


@needs_posix
def test_output_in_a_read_only_folder(place, capsys):
    locked = place / "locked"
    locked.mkdir()
    with unchanged(place), read_only(locked):
        assert_user_error(cli(place, "canny", "photo.png", "locked/out.png"), capsys, "locked", "not writable")


def test_full_disk_keeps_the_old_image_and_leaves_no_partial_file(place, capsys):
    """Issue 10: on a full disk `annotate -o` left a partial file over the user's image."""
    with unchanged(place), full_disk(1024):  # the inverted noise photo's PNG is about 7 KB
        code, _, err = run_cli(cli(place, "invert", "photo.png", "mine.png"), capsys)
    assert code == 1 and "Traceback" not in err and "internal error" not in err
    assert "space" in err.lower() or "disk" in err.lower(), err


def test_existing_output_is_replaced_whole(place, capsys):
    assert run_cli(cli(place, "canny", "photo.png", "mine.png"), capsys)[0] == 0
    assert np.array_equal(np.array(Image.open(place / "mine.png")), annotate("canny", PHOTO))
    assert sorted(p.name for p in place.iterdir() if p.name.startswith(".")) == []


# ------------------------------------------------------------------------ learned annotators

LEARNED = ["depth", "depth_midas", "normal_midas", "seg_ade20k", "softedge_hed", "scribble_hed", "lineart_realistic",
           "lineart_coarse", "softedge_teed", "seg_ofade20k", "seg_ofcoco", "seg_ufade20k", "lineart_anime",
           "lineart_anime_denoise", "anyline", "depth_leres", "depth_leres++"]


@pytest.mark.parametrize("name", LEARNED)
def test_learned_annotators_without_a_model_say_how_to_give_one(place, capsys, monkeypatch, name):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # even when a download would be allowed, none is tried
    with unchanged(place):
        assert_user_error(cli(place, name), capsys, f"{name} needs ", "--models-dir DIR", "CONTROLNET_ANNOTATOR_DIR",
                          "--param model=", "published at")


@pytest.mark.parametrize("name", ["depth", "softedge_hed"])
def test_learned_annotators_with_a_missing_model_path(place, capsys, name):
    with unchanged(place):
        assert_user_error(cli(place, name, "photo.png", "out.png", "--param", f"model={place / 'nowhere'}"),
                          capsys, "nowhere", "not found")


# --------------------------------------------------------------------------------- the API

API = [
    (lambda: np.full((8, 8, 3), np.nan, np.float32), {}, "NaN or infinite"),
    (lambda: np.full((8, 8, 3), np.inf, np.float32), {}, "NaN or infinite"),
    (lambda: np.zeros((0, 8, 3), np.uint8), {}, "empty"),
    (lambda: np.zeros((8, 8, 5), np.uint8), {}, "H×W×4"),
    (lambda: PHOTO, {"sigma": float("nan")}, "no parameter sigma"),
    (lambda: PHOTO, {"low_threshold": float("nan")}, "low_threshold"),
    (lambda: PHOTO, {"resize_mode": None}, "always fitted"),
    (lambda: PHOTO, {"resolution": float("inf")}, "resolution"),
    (lambda: PHOTO, {"device": "cuda:99"}, "device cuda:99 is not available"),
    (lambda: PHOTO, {"device": "meta"}, "device meta holds no data"),
]


@pytest.mark.parametrize(("make", "kwargs", "message"), API)
def test_api_refuses_clearly(make, kwargs, message):
    with pytest.raises(InputError, match=message):
        annotate("canny", make(), **kwargs)


@pytest.mark.parametrize(("name", "param"), [("mlsd", "value_threshold"), ("recolor_luminance", "gamma_correction"),
                                             ("normal_from_depth", "z"), ("blur_gaussian", "sigma")])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_api_float_parameters_are_finite(name, param, value):
    with pytest.raises(InputError, match=f"parameter '{param}' must be a finite number"):
        annotate(name, PHOTO, **{param: value})


def test_output_that_is_the_input_is_refused(place, capsys):
    """The map would overwrite the photo it was detected from."""
    with unchanged(place):
        assert_user_error(cli(place, "canny", "photo.png", "photo.png"), capsys, "output image (-o)", "the input image")
