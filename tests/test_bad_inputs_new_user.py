"""Bad inputs found by trying the commands as a new user would, after the per-command suites:
empty paths (Path("") would quietly mean the current folder: `world export ''` used to write
1000 samples there), devices given as images, built-in names in the wrong place."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, unchanged
from controlnet.assets import MINI_DIR
from controlnet.checks import integer

EMPTY_OUTPUTS = [
    (["world", "export", ""], "output folder"),
    (["world", "show", ""], "grid"),
    (["world", "build-mini", ""], "build folder"),
    (["demo", "-o", ""], "demo grid"),
    (["convert", str(MINI_DIR / "controlnet-edges"), "", "--to", "original"], "output"),
    (["annotate", "canny", "photo.png", "-o", ""], "output image"),
    (["generate", "--model", "mini", "--prompt", "x", "-o", ""], "output folder"),
    (["train", "--base-model", "mini", "--data", "photo.png", "--output-dir", ""], "output"),
]


@pytest.fixture
def here(tmp_path, monkeypatch):
    """The user's current folder, holding one photo; nothing may appear in it."""
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("argv", "what"), EMPTY_OUTPUTS, ids=[" ".join(a[:2]) for a, _ in EMPTY_OUTPUTS])
def test_an_empty_output_path_is_refused_not_taken_as_here(here, capsys, argv, what):
    with unchanged(here):
        assert_user_error(argv, capsys, what)


@pytest.mark.parametrize("device", ["/dev/null", "."])
def test_a_device_or_folder_as_the_image_is_named(here, capsys, device):
    with unchanged(here):
        assert_user_error(["annotate", "canny", device, "-o", "out.png"], capsys, device)


@pytest.mark.parametrize(("argv", "fragments"), [
    (["generate", "--model", "mini:edges", "--prompt", "x"], ["built-in ControlNet", "--controlnet mini:edges"]),
    (["generate", "--model", "mini", "--controlnet", "mini", "--image", "photo.png", "--prompt", "x"],
     ["mini:edges", "mini:seg", "mini:depth"]),
    (["generate", "--model", "mini", "--controlnet", "mini:nope", "--image", "photo.png", "--prompt", "x"],
     ["nope", "edges"]),
])
def test_built_in_names_in_the_wrong_place_say_what_to_write(here, capsys, argv, fragments):
    with unchanged(here):
        assert_user_error(argv, capsys, *fragments)


def test_whole_bounds_read_as_whole_numbers():
    with pytest.raises(ValueError, match=r"seed must be in \[0, 4294967295\], got 99999999999"):
        integer("seed", 99_999_999_999, lo=0, hi=2**32 - 1)


@pytest.mark.parametrize("argv", [
    ["evaluate", "--model", "mini", "--prompts", "weird", "-o", "new/out"],
    ["evaluate", "--model", "mini", "--controlnet", "mini:nope", "-o", "new/out"],
    ["generate", "--model", "mini", "--prompt", "x", "--steps", "0", "-o", "new/out"],
    ["generate", "--model", "mini", "--controlnet", "mini:edges", "--image", "missing.png", "--prompt", "x",
     "-o", "new/out"],
    ["world", "export", "new/out", "--n", "0"],
    ["annotate", "canny", "photo.png", "-o", "new/out.png", "--param", "sigma=1"],
], ids=lambda a: " ".join(a[:3]))
def test_a_refused_command_leaves_no_empty_output_folder(here, capsys, argv):
    assert_user_error(argv, capsys)
    assert not (here / "new").exists(), "the refused command created its output folder"
