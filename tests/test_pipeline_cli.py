"""`controlnet generate`: files written, parameters stored and reproducible, one-line errors."""

import json

import numpy as np
import pytest
from PIL import Image

from tiny_models import random_hint, save_base_and_controlnet

W, H = 64, 48


def cli(argv: list[str]) -> int:
    from controlnet.cli import main

    return main(["generate", *argv])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("generate")
    save_base_and_controlnet(d)
    random_hint(W, H, seed=1).save(d / "a.png")
    random_hint(2 * W, 2 * H, seed=2).convert("RGBA").save(d / "b.png")  # other size and alpha: resized, converted
    return d


def common(d, out, *extra):
    return ["--model", str(d / "base"), "--prompt", "a house", "--steps", "2", "-o", str(out), *extra]


def test_generate_writes_images_with_parameters_and_a_grid_and_reproduces(files, tmp_path, capsys):
    d = files
    argv = common(d, tmp_path, "--controlnet", str(d / "cn"), "--image", str(d / "a.png"), "--weight", "0.7",
                  "--controlnet", str(d / "cn"), "--image", str(d / "b.png"), "--mode", "control", "--end", "0.5",
                  "--seed", "5", "--num-images", "2", "--width", str(W), "--height", str(H))
    assert cli(argv) == 0
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["00000-5.png", "00001-6.png", "grid-00000.png"]
    grid = Image.open(tmp_path / "grid-00000.png")
    assert grid.size == (4 * W, H)  # two condition maps, then two samples
    second = Image.open(tmp_path / "00001-6.png")
    params = json.loads(second.text["controlnet"])
    assert params["seed"] == 6 and params["num_images"] == 1 and (params["width"], params["height"]) == (W, H)
    assert [u["weight"] for u in params["units"]] == [0.7, 1.0] and params["units"][1]["mode"] == "control"
    assert params["units"][1]["end"] == 0.5 and "Seed: 6" in second.text["parameters"]

    again = tmp_path / "again"
    assert cli(["--from", str(tmp_path / "00001-6.png"), "-o", str(again)]) == 0
    assert np.array_equal(np.asarray(Image.open(again / "00000-6.png")), np.asarray(second))


def test_preprocess_runs_the_annotator_first(files, tmp_path):
    pytest.importorskip("controlnet.annotators")
    d = files
    assert cli(common(d, tmp_path, "--controlnet", str(d / "cn"), "--image", str(d / "b.png"), "--preprocess", "canny",
                      "--seed", "0", "--width", str(W), "--height", str(H))) == 0
    grid = np.asarray(Image.open(tmp_path / "grid-00000.png"))
    edges = grid[:, :W]
    assert set(np.unique(edges)) <= {0, 255}  # the hint shown is the canny map, not the photo


def test_preprocess_runs_on_generates_device(files, monkeypatch):
    """--device reaches the preprocessor: a learned one runs its networks there (docs/annotators.md, Device)."""
    from controlnet import generation

    seen = []
    monkeypatch.setattr("controlnet.annotators.annotate", lambda *a, **k: seen.append(k["device"]) or np.zeros((H, W, 3), np.uint8))
    unit = {"controlnet": "cn", "image": str(files / "a.png"), "mask": None, "preprocess": "canny", "processor_res": None,
            "pixel_perfect": None, "preprocess_params": None}
    generation._unit_images(unit, W, H, "just_resize", device="cuda:1")
    assert seen == ["cuda:1"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--controlnet", "{cn}"], "has no --image"),
        (["--controlnet", "{cn}", "--image", "{a}", "--start", "0.6", "--end", "0.4"], "must be before end"),
        (["--controlnet", "{cn}", "--image", "{a}", "--width", "50"], "multiple of 8"),
        (["--controlnet", "{cn}", "--image", "{a}", "--mode", "loud"], "unknown control mode"),
        (["--controlnet", "{d}/nope", "--image", "{a}"], "ControlNet not found"),
        (["--controlnet", "{cn}", "--image", "{d}/nope.png"], "image file not found"),
        (["--controlnet", "{cn}", "--image", "{a}", "--resize", "none", "--width", "32", "--height", "32"], "resize is off"),
        (["--controlnet", "{cn}", "--image", "{a}", "--preprocess", "no_such_annotator"], "no_such_annotator"),
        (["--scheduler", "warp"], "unknown scheduler"),
    ],
)
def test_bad_input_exits_2_with_one_line(files, tmp_path, capsys, argv, message):
    d = files
    argv = [a.format(cn=d / "cn", a=d / "a.png", d=d) for a in argv]
    assert cli(common(d, tmp_path, *argv)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_missing_base_model_is_one_line(files, tmp_path, capsys):
    assert cli(["--model", str(tmp_path / "none"), "-o", str(tmp_path)]) == 2
    assert "base model not found" in capsys.readouterr().err
    assert cli(["-o", str(tmp_path)]) == 2
    assert "--model" in capsys.readouterr().err


def test_unit_option_before_controlnet_is_a_usage_error(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli(common(files, tmp_path, "--weight", "0.5"))
    assert exc.value.code == 2 and "give --controlnet FILE before --weight" in capsys.readouterr().err


def test_the_jobs_defaults_are_the_commands():
    """`controlnet.generation.Job`, used from Python, defaults to what `controlnet generate` does
    without options (the command builds one from its parsed options)."""
    from controlnet.cli import build_parser
    from controlnet.cli.generate import job_of
    from controlnet.generation import Job

    assert job_of(build_parser().parse_args(["generate"])) == Job()
