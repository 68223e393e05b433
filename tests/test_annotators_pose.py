"""Pose/face annotators through mediapipe's bundled models, and the message when mediapipe is absent."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
from skimage import data

from controlnet.annotators import annotate
from controlnet.annotators import pose as pose_module
from controlnet.annotators.openpose_draw import BODY_COLORS, HAND_BONE_COLORS, HAND_JOINT_COLOR, draw_body
from controlnet.errors import InputError

ASTRONAUT = data.astronaut()


@pytest.fixture
def no_cache():
    pose_module._detector.cache_clear()
    yield
    pose_module._detector.cache_clear()


def test_missing_mediapipe_names_the_extra(monkeypatch, no_cache):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # import mediapipe -> ImportError
    for name in ("pose", "mediapipe_face"):
        with pytest.raises(InputError, match=r"pip install 'controlnet-pytorch\[pose\]'"):
            annotate(name, ASTRONAUT, resolution=128)


def test_mediapipe_without_bundled_models_is_explained(monkeypatch, no_cache):
    monkeypatch.setitem(sys.modules, "mediapipe", types.SimpleNamespace(__version__="1.2.2"))
    with pytest.raises(InputError, match=r"mediapipe 1\.2\.2 has no bundled models.*0\.10\.21"):
        annotate("pose", ASTRONAUT, resolution=128)


def test_openpose_drawing_convention():
    """Synthetic skeleton: limbs at 60 % colour, joints in full colour, nothing else on black."""
    canvas = np.zeros((128, 128, 3), np.uint8)
    body = np.full((18, 2), np.nan, np.float32)
    body[[1, 2, 3]] = [[64, 30], [40, 30], [40, 80]]  # neck, right shoulder, right elbow
    draw_body(canvas, [body])
    colours = {tuple(c) for c in canvas.reshape(-1, 3)}
    limb = lambda i: tuple(int(v * 0.6) for v in BODY_COLORS[i])  # noqa: E731
    assert {BODY_COLORS[1], BODY_COLORS[2], BODY_COLORS[3], limb(0), limb(2)} <= colours
    assert colours <= {(0, 0, 0), BODY_COLORS[1], BODY_COLORS[2], BODY_COLORS[3], limb(0), limb(2)}
    assert tuple(canvas[30, 64]) == BODY_COLORS[1] and tuple(canvas[55, 40]) == limb(2)


needs_mediapipe = pytest.mark.skipif(
    importlib.util.find_spec("mediapipe") is None, reason="the 'pose' extra (mediapipe==0.10.21) is not installed"
)


@needs_mediapipe
def test_pose_finds_the_astronaut_and_draws_openpose18():
    out = annotate("pose", ASTRONAUT)
    assert out.shape == (512, 512, 3)
    allowed = {(0, 0, 0)} | set(BODY_COLORS) | {tuple(int(v * 0.6) for v in c) for c in BODY_COLORS}
    colours = {tuple(c) for c in out.reshape(-1, 3)}
    assert colours <= allowed, "only OpenPose palette colours (full for joints, 60 % for limbs)"
    nose, neck = BODY_COLORS[0], BODY_COLORS[1]
    ys, xs = np.nonzero((out == nose).all(axis=2))
    assert len(ys) > 20 and 150 < xs.mean() < 280 and 80 < ys.mean() < 200, "nose joint on the face"
    ys, xs = np.nonzero((out == neck).all(axis=2))
    assert len(ys) > 20 and 200 < ys.mean() < 300, "neck between the shoulders, under the face"
    assert np.array_equal(out, annotate("pose", ASTRONAUT)), "deterministic"


@needs_mediapipe
def test_pose_with_face_and_hands_and_resize():
    out = annotate("pose", ASTRONAUT, resolution=384, face=True, hands=True, width=300, height=300)
    assert out.shape == (300, 300, 3)
    white = (out == 255).all(axis=2)
    assert white.sum() > 50, "face points are white dots"
    allowed = {(0, 0, 0), (255, 255, 255), HAND_JOINT_COLOR} | set(BODY_COLORS) | set(HAND_BONE_COLORS)
    allowed |= {tuple(int(v * 0.6) for v in c) for c in BODY_COLORS}
    assert {tuple(c) for c in out.reshape(-1, 3)} <= allowed, "nearest resize keeps palette colours"


@needs_mediapipe
def test_pose_on_a_photo_without_people_is_black():
    assert annotate("pose", data.coffee(), resolution=256).max() == 0


@needs_mediapipe
def test_mediapipe_face_draws_coloured_contours():
    out = annotate("mediapipe_face", ASTRONAUT)
    colours = {tuple(c) for c in out.reshape(-1, 3)} - {(0, 0, 0)}
    assert (10, 200, 10) in colours and (10, 180, 10) in colours, "face oval and lips (RGB after the flip)"
    assert (10, 200, 250) in colours or (250, 200, 10) in colours, "pupils"
