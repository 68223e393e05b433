"""Classical annotators on real photographs (skimage.data): conventions, exactness, bad inputs."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from skimage import data

from controlnet.annotators import (
    annotate,
    fit_map,
    get_annotator,
    list_annotators,
    map_to_hint,
    pixel_perfect_resolution,
    resize_short_side,
    to_rgb,
)
from controlnet.errors import InputError, MissingFileError

CLASSICAL = [a.name for a in list_annotators() if not a.learned]
ASTRONAUT = data.astronaut()  # 512×512 RGB
COFFEE = data.coffee()  # 400×600 RGB
ROCKET = data.rocket()  # 427×640 RGB
CAMERA = data.camera()  # 512×512 grey


def half_mask(image: np.ndarray) -> np.ndarray:
    mask = np.zeros(image.shape[:2], bool)
    mask[:, : image.shape[1] // 2] = True
    return mask


def params_for(name: str, image: np.ndarray) -> dict:
    return {"mask": half_mask(image)} if name == "inpaint" else {}


def test_registry_lists_documented_fields():
    names = {a.name for a in list_annotators()}
    assert {"canny", "mlsd", "scribble", "scribble_xdog", "softedge", "lineart_standard", "binary", "threshold",
            "invert", "shuffle", "color", "tile_resample", "blur_gaussian", "inpaint", "normal_from_depth",
            "depth", "seg_ade20k", "pose", "mediapipe_face", "softedge_hed", "lineart_realistic"} <= names
    for spec in list_annotators():
        assert spec.feeds and spec.summary and spec.kind in ("label", "edge", "binary", "image")
        for p in spec.params:  # every default passes its own validation
            if not p.required:
                assert p.convert(p.default, spec.name) == p.default


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize("photo", ["coffee", "rocket"])
def test_classical_shape_dtype_determinism(name, photo):
    image = getattr(data, photo)()
    first = annotate(name, image, resolution=256, **params_for(name, image))
    again = annotate(name, image, resolution=256, **params_for(name, image))
    channels = 4 if name == "inpaint" else 3
    assert first.shape == (*image.shape[:2], channels) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    assert first.std() > 0, "a real photo must not give a constant map"


@pytest.mark.parametrize("name", ["canny", "mlsd", "scribble_xdog", "scribble_softedge", "softedge", "lineart_standard"])
def test_edge_maps_are_white_strokes_on_black_grey(name):
    detected = annotate(name, ROCKET, resolution=384)
    assert np.array_equal(detected[:, :, 0], detected[:, :, 1]) and np.array_equal(detected[:, :, 1], detected[:, :, 2])
    assert np.median(detected) < 40, "the background must be black (soft edges: nearly)"
    assert detected.max() == 255, "strokes must be white"
    flat = annotate(name, np.full((64, 96, 3), 140, np.uint8), resolution=64)
    assert flat.max() == 0, "a flat image has no edges"


def test_canny_equals_cv2_bit_for_bit_at_detect_resolution():
    assert np.array_equal(annotate("canny", ASTRONAUT)[:, :, 0], cv2.Canny(ASTRONAUT, 100, 200))
    detect = resize_short_side(COFFEE, 300)  # 300×450, INTER_AREA
    assert detect.shape[:2] == (300, 450)
    got = annotate("canny", COFFEE, resolution=300, width=450, height=300, low_threshold=50, high_threshold=150)
    assert np.array_equal(got[:, :, 0], cv2.Canny(detect, 50, 150))
    assert np.array_equal(got[:, :, 1], got[:, :, 2])


def test_canny_output_resized_with_nearest_stays_binary():
    out = annotate("canny", COFFEE, resolution=256)
    assert out.shape == COFFEE.shape and set(np.unique(out)) == {0, 255}


def test_detect_resolution_and_pixel_perfect():
    small = cv2.resize(ASTRONAUT, (256, 256), interpolation=cv2.INTER_AREA)
    expected = cv2.Canny(small, 100, 200)
    assert np.array_equal(annotate("canny", ASTRONAUT, resolution=256, width=256, height=256)[:, :, 0], expected)
    assert np.array_equal(annotate("canny", ASTRONAUT, pixel_perfect=True, width=256, height=256)[:, :, 0], expected)
    assert pixel_perfect_resolution((512, 768), (512, 512), "crop_and_resize") == 512
    assert pixel_perfect_resolution((512, 768), (512, 512), "resize_and_fill") == 341
    assert pixel_perfect_resolution((400, 600), (768, 512), "just_resize") == 768


def test_resize_modes():
    detected = annotate("color", COFFEE, resolution=256)
    crop = fit_map(detected, (300, 300), "label", "crop_and_resize")
    fill = fit_map(detected, (300, 300), "label", "resize_and_fill")
    assert crop.shape == fill.shape == (300, 300, 3)
    border = np.concatenate([detected[0], detected[-1], detected[:, 0], detected[:, -1]])
    assert np.array_equal(fill[0, 0], np.median(border, axis=0).astype(np.uint8)), "fill uses the median border colour"
    with pytest.raises(InputError, match="resize mode"):
        annotate("canny", COFFEE, resize_mode="squash")
    # one list of names and A1111 aliases for the pipeline and the annotators
    assert np.array_equal(fit_map(detected, (300, 300), "label", "Crop and Resize"), crop)
    assert np.array_equal(fit_map(detected, (300, 300), "label", 2), fill)


def test_label_maps_keep_their_colours_when_resized():
    detected = annotate("color", COFFEE, resolution=256, width=600, height=400)
    resized = annotate("color", COFFEE, resolution=256, width=301, height=211)
    colours = {tuple(c) for c in detected.reshape(-1, 3)}
    assert {tuple(c) for c in resized.reshape(-1, 3)} <= colours


def test_color_grid_cells_are_constant():
    grid = annotate("color", ASTRONAUT, resolution=512)
    cells = grid.reshape(8, 64, 8, 64, 3)
    assert (cells == cells[:, :1, :, :1]).all()


def test_mlsd_draws_straight_segments_of_a_rectangle():
    canvas = np.full((256, 256, 3), 255, np.uint8)
    cv2.rectangle(canvas, (60, 70), (200, 180), (0, 0, 0), thickness=3)
    lines = annotate("mlsd", canvas, resolution=256)[:, :, 0]
    ys, xs = np.nonzero(lines)
    assert len(ys) > 400, "the four sides must be found"
    near_side = (np.minimum.reduce([abs(xs - 60), abs(xs - 200), abs(ys - 70), abs(ys - 180)]) <= 4)
    assert near_side.all(), "lines only along the rectangle"
    assert set(np.unique(lines)) == {0, 255}


def test_mlsd_thresholds_filter_segments():
    everything = (annotate("mlsd", ROCKET, resolution=384) > 0).sum()
    strong = (annotate("mlsd", ROCKET, resolution=384, value_threshold=0.4) > 0).sum()
    few = (annotate("mlsd", ROCKET, resolution=384, max_lines=5) > 0).sum()
    long_only = (annotate("mlsd", ROCKET, resolution=384, distance_threshold=40) > 0).sum()
    assert everything > strong > 0 and everything > few > 0 and everything > long_only > 0
    assert annotate("mlsd", ROCKET, resolution=384, value_threshold=1.0).max() == 0


def test_scribble_turns_black_drawing_into_white_strokes():
    drawing = np.full((128, 128, 3), 255, np.uint8)
    cv2.line(drawing, (10, 20), (110, 100), (0, 0, 0), 5)
    out = annotate("scribble", drawing, resolution=128)[:, :, 0]
    assert np.array_equal(out > 0, drawing[:, :, 0] < 127)
    assert np.array_equal(annotate("invert", drawing, resolution=128), 255 - drawing)


def test_binary_is_inverted_otsu_and_threshold_marks_bright():
    grey = cv2.cvtColor(COFFEE, cv2.COLOR_RGB2GRAY)
    _, expected = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
    assert np.array_equal(annotate("binary", COFFEE, resolution=400)[:, :, 0], expected)
    fixed = annotate("binary", COFFEE, resolution=400, threshold=100)[:, :, 0]
    assert np.array_equal(fixed > 0, grey <= 100)
    bright = annotate("threshold", COFFEE, resolution=400, threshold=200)[:, :, 0]
    assert np.array_equal(bright > 0, COFFEE.min(axis=2) > 200)


def test_lineart_standard_marks_dark_lines():
    drawing = np.full((128, 128, 3), 255, np.uint8)
    cv2.line(drawing, (0, 64), (127, 64), (0, 0, 0), 2)
    out = annotate("lineart_standard", drawing, resolution=128)[:, :, 0]
    # strokes at the median darkness map to 127 (the formula's scale), paper far from lines to 0
    assert out[64, 10:118].min() >= 120 and out[:40].max() == 0


def test_shuffle_is_seeded_and_keeps_the_palette():
    a = annotate("shuffle", ASTRONAUT, resolution=256, seed=1)
    b = annotate("shuffle", ASTRONAUT, resolution=256, seed=2)
    assert np.array_equal(a, annotate("shuffle", ASTRONAUT, resolution=256, seed=1))
    assert not np.array_equal(a, b)
    assert np.abs(a.astype(float) - ASTRONAUT).mean() > 20, "the layout must be destroyed"
    # the remap only moves pixels: colour statistics stay close to the photo's
    assert np.abs(a.reshape(-1, 3).mean(0) - ASTRONAUT.reshape(-1, 3).mean(0)).max() < 40


def test_tile_and_blur():
    assert np.array_equal(annotate("tile_resample", COFFEE), COFFEE)
    tiled = annotate("tile_resample", COFFEE, downsample_rate=4.0)
    assert tiled.shape == COFFEE.shape
    detail = lambda im: cv2.Laplacian(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()  # noqa: E731
    assert detail(tiled) < detail(COFFEE) / 4
    assert np.array_equal(annotate("blur_gaussian", ASTRONAUT), cv2.GaussianBlur(ASTRONAUT, (0, 0), 9.0))


def test_recolor_is_grey_lightness():
    lum = annotate("recolor_luminance", ASTRONAUT)
    assert np.array_equal(lum[:, :, 0], cv2.cvtColor(ASTRONAUT, cv2.COLOR_RGB2LAB)[:, :, 0])
    assert np.array_equal(annotate("recolor_intensity", ASTRONAUT)[:, :, 1], ASTRONAUT.max(axis=2))


def test_inpaint_marks_masked_pixels_minus_one():
    mask = half_mask(COFFEE)
    rgba = annotate("inpaint", COFFEE, mask=mask)
    assert rgba.shape == (*COFFEE.shape[:2], 4)
    assert np.array_equal(rgba[:, :, :3], COFFEE) and np.array_equal(rgba[:, :, 3] == 255, mask)
    hint = map_to_hint(rgba)
    assert hint.dtype == np.float32 and (hint[mask] == -1).all()
    assert np.allclose(hint[~mask], COFFEE[~mask] / 255.0)
    small = cv2.resize(mask.astype(np.uint8) * 255, (60, 40), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(annotate("inpaint", COFFEE, mask=small)[:, :, 3], rgba[:, :, 3])
    with pytest.raises(InputError, match="mask is empty"):
        annotate("inpaint", COFFEE, mask=np.zeros(COFFEE.shape[:2], bool))
    with pytest.raises(InputError, match="needs parameter 'mask'"):
        annotate("inpaint", COFFEE)


def test_normal_from_depth_formula_and_channel_order():
    ramp = np.tile(np.linspace(0, 255, 256, dtype=np.float32), (64, 1))  # nearer to the right
    out = annotate("normal_from_depth", ramp.astype(np.uint8), resolution=64)
    background = ramp / 255 < 0.4
    interior = ~background
    interior[:, :2] = interior[:, -2:] = False
    assert (out[background] == [255, 127, 127]).all(), "background: flat normal, R=z G=y B=x"
    gx = 8.0  # 3×3 Sobel of a ramp rising one grey level per pixel
    n = np.array([gx, 0.0, 2 * math.pi]) / math.hypot(gx, 2 * math.pi)
    expected = (n * 127.5 + 127.5).astype(np.uint8)[::-1]
    assert (np.abs(out[interior].astype(int) - expected) <= 1).all()


@pytest.mark.parametrize(
    "make",
    [
        lambda: CAMERA,  # 2-D grey
        lambda: CAMERA[:, :, None],  # H×W×1
        lambda: np.dstack([CAMERA] * 3).astype(np.uint16) * 257,  # 16-bit
        lambda: np.dstack([CAMERA] * 3).astype(np.float32) / 255.0,  # float in [0, 1]
    ],
)
def test_grey_16bit_and_float_inputs_convert(make):
    expected = cv2.Canny(np.dstack([CAMERA] * 3), 100, 200)
    assert np.array_equal(annotate("canny", make())[:, :, 0], expected)


def test_rgba_is_composited_on_white():
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16, 3] = 255  # left half opaque black, right half transparent
    rgb = to_rgb(rgba)
    assert (rgb[:, :16] == 0).all() and (rgb[:, 16:] == 255).all()
    assert (annotate("scribble", rgba, resolution=32)[:, :16] == 255).all()


def test_tiny_image_is_upscaled_and_back():
    one = np.array([[[10, 200, 30]]], np.uint8)
    out = annotate("canny", one)
    assert out.shape == (1, 1, 3) and out.max() == 0


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.broadcast_to(np.uint8(0), (20_000, 20_000, 3)), "MP"),
        (np.zeros((8, 8, 5), np.uint8), "shape"),
        (np.full((8, 8, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((8, 8, 3), -5, np.int32), "bits"),
        ("not an image", "not found"),
        (12345, "expected an image"),
        (np.zeros((1, 4000, 3), np.uint8), "too large"),
    ],
)
def test_bad_images_are_rejected_clearly(image, message):
    with pytest.raises((InputError, MissingFileError), match=message):
        annotate("canny", image)


def test_unknown_names_and_params():
    with pytest.raises(InputError, match="Did you mean canny"):
        annotate("cany", COFFEE)
    with pytest.raises(InputError, match="valid: low_threshold, high_threshold"):
        annotate("canny", COFFEE, low=3)
    with pytest.raises(InputError, match="expects a int"):
        annotate("canny", COFFEE, low_threshold="abc")
    with pytest.raises(InputError, match=r"must be in \[0, 1000\]"):
        annotate("canny", COFFEE, low_threshold=-1)
    with pytest.raises(InputError, match="resolution"):
        annotate("canny", COFFEE, resolution=0)
    with pytest.raises(InputError, match="width"):
        annotate("canny", COFFEE, width=-3)
    assert get_annotator("Soft-Edge_HED".replace("Soft-Edge", "softedge")).name == "softedge_hed"
    assert get_annotator("segmentation").name == "seg_ade20k"


def test_cli_style_string_params_are_converted():
    a = annotate("canny", COFFEE, resolution=256, low_threshold="50", high_threshold="150")
    b = annotate("canny", COFFEE, resolution=256, low_threshold=50, high_threshold=150)
    assert np.array_equal(a, b)
    assert np.array_equal(annotate("softedge", COFFEE, resolution=128, safe="true"),
                          annotate("softedge", COFFEE, resolution=128, safe=True))
