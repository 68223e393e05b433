"""The reproduction experiments (experiments/, issue 12): each script's --tiny mode runs end to end
on the built-in miniature model and writes well-formed numbers (JSON) and figures (PNG); tiny runs
refuse to write over the real results; a rerun skips what is done."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from controlnet.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SCRIPTS = {
    "exp1_zero_conv": ["exp1_zero_conv.png", "exp1_zero_conv_strip.png"],
    "exp4_cfg_rw": ["exp4_cfg_rw.png", "exp4_cfg_rw_samples.png"],
    "exp5_composition": ["exp5_composition.png", "exp5_composition_samples.png"],
}


def load(name: str):
    sys.path.insert(0, str(EXPERIMENTS))
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_run_fixture(name: str):
    """A module fixture: the folder of `name`'s --tiny run (run once per test module)."""
    @pytest.fixture(scope="module")
    def tiny_run(tmp_path_factory):
        out = tmp_path_factory.mktemp(name)
        assert load(name).main(["--tiny", "-o", str(out)]) == 0
        return out

    return tiny_run


def finite_results(out: Path, name: str) -> dict:
    """The results JSON of a run, checked to hold only finite numbers."""
    data = json.loads((out / f"{name}.json").read_text())
    assert_finite(data["parts"], name)
    return data


def assert_finite(parts, name: str = "") -> None:
    """Every number of a results tree is finite (undefined figures are null with a note)."""
    bad = [p for p, v in numbers(parts) if not math.isfinite(v)]
    assert not bad, f"{name}: non-finite numbers at {bad[:5]}"


def numbers(obj, path=""):
    """(path, value) of every number in a JSON tree, and every null 'value'."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "value" and v is None and "note" not in obj:  # undefined figures say why
                yield f"{path}/{k}", float("nan")
            yield from numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}/{i}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def check_png(path: Path) -> None:
    from controlnet.images import to_rgb8

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = to_rgb8(path)
    assert img.shape[0] > 32 and img.shape[1] > 32 and img.std() > 0, f"{path} is blank"


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduction")
    for name in SCRIPTS:
        assert load(name).main(["--tiny", "-o", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_tiny_outputs_are_well_formed(tiny_runs, name):
    data = json.loads((tiny_runs / f"{name}.json").read_text())
    assert data["parts"], f"{name}: no results"
    assert data["header"]["weights"]["sha256_16"]["model"], "the weights used are recorded"
    assert list(numbers(data["parts"])), f"{name}: no numbers"
    assert_finite(data["parts"], name)
    for figure in SCRIPTS[name]:
        check_png(tiny_runs / figure)


def test_zero_convolutions_change_nothing_gaussian_does(tiny_runs):
    safety = json.loads((tiny_runs / "exp1_zero_conv.json").read_text())["parts"]["safety"]
    assert safety["zero"]["identical"] and safety["zero"]["max_abs_diff"] == 0.0
    assert not safety["gaussian"]["identical"] and safety["gaussian"]["max_abs_diff"] > 0


def test_every_setting_is_scored(tiny_runs):
    exp4 = json.loads((tiny_runs / "exp4_cfg_rw.json").read_text())["parts"]
    assert set(exp4) == {"balanced@cfg5", "cfg_rw@cfg5", "cond_uniform@cfg5", "off_palette"}
    off = exp4.pop("off_palette")
    assert off["true pictures"]["value"] == 0.0  # the world's own pictures use only its colours
    assert set(off["balanced@cfg5"]) == {"no control", "mini:edges", "mini:seg"}
    assert set(off["cond_uniform@cfg5"]) == {"mini:edges", "mini:seg"}
    for key, part in exp4.items():
        rows = {(r["row"], r["metric"]) for r in part["records"]}
        assert {("mini:edges", "edge_f1"), ("mini:seg", "label_accuracy"), ("mini:seg", "layout_edge_f1")} <= rows
        if not key.startswith("cond_uniform"):  # evaluate's runs carry the uncontrolled row too
            assert ("no control", "edge_f1") in rows
    exp5 = json.loads((tiny_runs / "exp5_composition.json").read_text())["parts"]
    assert {"perfect|none", "perfect|depth", "perfect|edges", "perfect|depth+edges", "perfect|depthx2",
            "perfect|edgesx2"} <= set(exp5)
    assert all({"edge_f1", "label_accuracy", "depth_rmse"} <= set(v) for v in exp5.values())


def test_rerun_skips_finished_parts(tiny_runs, monkeypatch):
    module = load("exp5_composition")
    monkeypatch.setattr(module, "score", lambda *a: pytest.fail("a finished part was computed again"))
    before = (tiny_runs / "exp5_composition.json").read_text()
    assert module.main(["--tiny", "-o", str(tiny_runs)]) == 0
    assert (tiny_runs / "exp5_composition.json").read_text() == before


@pytest.mark.parametrize("argv", [["--tiny"], ["--tiny", "-o", str(ROOT / "docs" / "reproduction")]])
def test_tiny_never_writes_over_the_real_results(argv):
    results = ROOT / "docs" / "reproduction"
    before = sorted(p.name for p in results.iterdir()) if results.is_dir() else []
    with pytest.raises(InputError, match="-o FOLDER"):
        load("exp4_cfg_rw").main(argv)
    assert (sorted(p.name for p in results.iterdir()) if results.is_dir() else []) == before


def test_jump_is_located_on_a_step_curve():
    exp1 = load("exp1_zero_conv")
    values = [0.2, 0.21, 0.2, 0.22, 0.5, 0.6, 0.61, 0.6, 0.6]
    curve = [{"step": 50 * (i + 1), "f1": {"value": v}} for i, v in enumerate(values)]
    j = exp1.jump(curve, "f1")
    assert j["largest_rise_at"] == 250 and j["largest_rise_from"] == 200
    assert j["step_10"] == 250 and j["step_90"] == 300 and j["steps_10_90"] == 50
    assert np.isclose(j["end_plateau"], 0.6033333)
