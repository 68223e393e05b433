"""Recommended settings stored with a ControlNet (`recommended.json`): demo, generate and evaluate use
them for every value the user does not give; a damaged file is one clear error."""

import json

import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, run_cli
from controlnet import recommended
from controlnet.errors import InputError
from test_demo import random_mini


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    return random_mini(tmp_path_factory.mktemp("rec") / "mini")


@pytest.fixture()
def recommend(mini):
    """Write recommendations for the edges ControlNet; removed afterwards."""
    files = []

    def write(condition="edges", **settings):
        file = mini / f"controlnet-{condition}" / recommended.FILE
        file.write_text(json.dumps(settings))
        files.append(file)
        return file

    yield write
    for f in files:
        f.unlink(missing_ok=True)


def test_read_checks_values_and_ignores_notes(mini, recommend):
    assert recommended.read(mini / "controlnet-edges") == {}  # no file: nothing recommended
    recommend(guidance_scale=2, weight=1.5, steps=12, mode="Balanced", scheduler="euler_a", note="sweep in docs/mini.md")
    assert recommended.read(mini / "controlnet-edges") == {"guidance_scale": 2.0, "weight": 1.5, "steps": 12,
                                                          "mode": "balanced", "scheduler": "euler_a"}
    assert recommended.agreed([mini / "controlnet-edges", mini / "controlnet-seg"], "weight", 1.0) == 1.5
    recommend("seg", weight=2)
    assert recommended.agreed([mini / "controlnet-edges", mini / "controlnet-seg"], "weight", 1.0) == 1.0


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "not an object"),
    ('{"cfg": 3}', "unknown key 'cfg'"),
    ('{"weight": -1}', "weight must be in"),
    ('{"steps": 2.5}', "steps must be a whole number"),
    ('{"mode": "loud"}', "unknown control mode"),
    ('{"scheduler": "fastest"}', "unknown scheduler 'fastest'"),
])
def test_a_damaged_file_is_one_clear_error(mini, recommend, text, fragment):
    file = recommend()
    file.write_text(text)
    with pytest.raises(InputError, match="damaged recommended settings") as exc:
        recommended.read(file.parent)
    assert fragment in str(exc.value) and str(file) in str(exc.value)


def _generate(mini, out, *extra):
    drawing = np.zeros((64, 64, 3), np.uint8)
    drawing[16:48, 16:48] = 255
    Image.fromarray(drawing).save(out.parent / "square.png")
    return ["generate", "--model", str(mini), "--controlnet", str(mini / "controlnet-edges"), "--image",
            str(out.parent / "square.png"), *extra, "--prompt", "a red square", "--seed", "1", "-o", str(out)]


def _params(folder):
    return json.loads(Image.open(sorted(folder.glob("0*.png"))[-1]).text["controlnet"])


def test_generate_uses_them_unless_given_and_from_keeps_the_stored_values(mini, recommend, tmp_path, capsys):
    recommend(guidance_scale=1.5, weight=0.7, steps=2, scheduler="euler_a")
    out = tmp_path / "a"
    assert run_cli(_generate(mini, out), capsys)[0] == 0
    params = _params(out)
    assert (params["cfg"], params["steps"], params["units"][0]["weight"], params["scheduler"]) == (1.5, 2, 0.7, "euler_a")
    assert run_cli(_generate(mini, out, "--weight", "1", "--cfg", "3", "--steps", "1", "--scheduler", "ddim"),
                   capsys)[0] == 0
    params = _params(out)
    assert (params["cfg"], params["steps"], params["units"][0]["weight"], params["scheduler"]) == (3.0, 1, 1.0, "ddim")
    recommend(guidance_scale=2.5, weight=0.2, steps=3)  # a PNG's stored values win over newer recommendations
    png = sorted(out.glob("0*.png"))[-1]
    assert run_cli(["generate", "--from", str(png), "-o", str(tmp_path / "b")], capsys)[0] == 0
    params = _params(tmp_path / "b")
    assert (params["cfg"], params["steps"], params["units"][0]["weight"]) == (3.0, 1, 1.0)


def test_a_damaged_file_stops_generate_demo_and_evaluate_before_sampling(mini, recommend, tmp_path, capsys):
    recommend().write_text('{"weight": "strong"}')
    out = tmp_path / "o"
    for argv in (_generate(mini, out), ["demo", "--model", str(mini), "-o", str(tmp_path / "d.png")],
                 ["evaluate", "--model", str(mini), "--controlnet", f"edges={mini / 'controlnet-edges'}",
                  "--n", "1", "--no-fid", "-o", str(out)]):
        assert_user_error(argv, capsys, "damaged recommended settings", "recommended.json", "weight")
    assert not out.exists() and not (tmp_path / "d.png").exists()


def test_evaluate_records_the_recommended_settings_unless_given(mini, recommend, tmp_path, capsys):
    recommend(guidance_scale=1.5, weight=0.5, steps=2, scheduler="euler")
    base = ["evaluate", "--model", str(mini), "--controlnet", f"edges={mini / 'controlnet-edges'}", "--data",
            "world:edges", "--n", "1", "--no-fid", "--grid-samples", "0"]
    assert run_cli([*base, "-o", str(tmp_path / "a")], capsys)[0] == 0
    settings = json.loads((tmp_path / "a" / "metrics.json").read_text())["settings"]
    assert (settings["guidance_scale"], settings["weight"], settings["steps"], settings["mode"],
            settings["scheduler"]) == (1.5, 0.5, 2, "balanced", "euler")
    assert sorted(settings["recommended"]) == ["guidance_scale", "scheduler", "steps", "weight"]
    assert run_cli([*base, "--cfg", "1", "--weight", "1", "--scheduler", "ddim", "-o", str(tmp_path / "b")],
                   capsys)[0] == 0
    settings = json.loads((tmp_path / "b" / "metrics.json").read_text())["settings"]
    assert (settings["guidance_scale"], settings["weight"], settings["steps"], settings["scheduler"]) == (1.0, 1.0, 2, "ddim")
    assert settings["recommended"] == ["steps"]


def test_the_demo_uses_each_controlnets_weight_unless_given(mini, recommend, tmp_path):
    from controlnet.mini.demo import make_demo

    recommend(weight=0.0, steps=2)  # weight 0: the edges rows' controlled pictures equal the plain ones
    recommend("seg", steps=2), recommend("depth", steps=2)
    cell = 4 * 64 + 4 * 2

    def edges_row(*, weight=None):
        out = tmp_path / f"demo-{weight}.png"
        make_demo(mini, out, samples=1, weight=weight, progress=False)
        grid = np.asarray(Image.open(out)).astype(int)
        return [grid[: 4 * 64, j * cell: j * cell + 4 * 64] for j in (1, 2)]

    plain, controlled = edges_row()
    assert np.array_equal(plain, controlled)
    plain, controlled = edges_row(weight=1.0)
    assert np.abs(plain - controlled).mean() > 1


def test_the_demo_samples_with_the_recommended_sampler(mini, recommend, tmp_path):
    from controlnet.mini.demo import make_demo

    grids = []
    for scheduler in ("ddim", "euler_a"):
        for condition in ("edges", "seg", "depth"):
            recommend(condition, steps=2, scheduler=scheduler)
        make_demo(mini, tmp_path / f"{scheduler}.png", samples=1, progress=False)
        grids.append(np.asarray(Image.open(tmp_path / f"{scheduler}.png")).astype(int))
    cell = 4 * 64 + 4 * 2
    maps, samples = np.s_[:, :cell], np.s_[:, cell:]  # the first column shows the condition maps
    assert np.array_equal(grids[0][maps], grids[1][maps])
    assert (grids[0][samples] != grids[1][samples]).mean() > 0.2
