"""Experiment 3 (training-data size, experiments/exp3_data_size.py): its --tiny run exports one set
of world pairs whose first ones are Experiment 1's, trains every size with Experiment 1's exact
arguments but `--max-train-samples`, evaluates each size and writes finite numbers and figures; a
rerun skips what is done; it never writes over the real results."""

from __future__ import annotations

import json
import shutil

import pytest

from controlnet.errors import InputError
from test_experiments import ROOT, check_png, finite_results, load, tiny_run_fixture

NAME = "exp3_data_size"


tiny_run = tiny_run_fixture(NAME)


def _config(run):
    return json.loads((run / "train_config.json").read_text())


def test_tiny_run_scores_every_data_size(tiny_run):
    module = load(NAME)
    data = finite_results(tiny_run, NAME)
    parts, arms = data["parts"], data["header"]["arms"]
    assert {a: v["pairs"] for a, v in arms.items()} == {**module.TINY_SIZES, "exp1": 8}
    got = {(r["row"], r["prompt"]) for r in parts["eval"]["records"] if r["metric"] == "edge_f1"}
    assert got == {(row, p) for row in ("no control", *arms) for p in ("none", "perfect")}
    settings = parts["eval"]["settings"]
    assert (settings["guidance_scale"], settings["weight"], settings["mode"]) == (5.0, 1.0, "balanced")
    assert set(parts["curves"]) == set(arms) and all(parts["curves"].values())
    assert len({v["sha256_16"] for v in arms.values()}) == 4, "four different networks"
    assert parts["export_prefix"] == {"pairs_compared": 8, "identical": True}
    assert {"export", "train-1k", "train-10k", "train-50k", "evaluate"} <= set(parts["timings"])
    for png in (f"{NAME}.png", f"{NAME}_samples.png"):
        check_png(tiny_run / png)


def test_arms_differ_only_in_their_number_of_pairs(tiny_run):
    module, work = load(NAME), tiny_run / "work" / NAME
    configs = {arm: _config(work / f"run-{arm}") for arm in module.TINY_SIZES}
    first = configs["1k"]
    for arm, cfg in configs.items():
        assert cfg["max_train_samples"] == module.TINY_SIZES[arm]
        diff = {k for k in first.keys() | cfg.keys() if first.get(k) != cfg.get(k)}
        assert diff <= {"output_dir", "max_train_samples"}, arm
    base = _config(work / "exp1" / "run")
    diff = {k for k in base.keys() | first.keys() if base.get(k) != first.get(k)}
    assert diff == {"output_dir", "max_train_samples", "data", "cache_dir"}  # validate_every: same in tiny mode
    ours = json.loads((work / "data" / "world.json").read_text())
    theirs = json.loads((work / "exp1" / "data" / "world.json").read_text())
    assert {k: v for k, v in ours.items() if k != "n"} == {k: v for k, v in theirs.items() if k != "n"}
    assert ours["n"] == max(module.TINY_SIZES.values()) > theirs["n"]


def test_the_prefix_check_sees_a_changed_picture(tiny_run, tmp_path):
    module, work = load(NAME), tiny_run / "work" / NAME
    copy = tmp_path / "data"
    shutil.copytree(work / "data", copy)
    (copy / "images" / "3.png").write_bytes((copy / "images" / "4.png").read_bytes())
    assert module.prefix_check(copy, work / "exp1" / "data")["identical"] is False
    assert module.prefix_check(work / "data", work / "exp1" / "data")["identical"] is True


def test_rerun_skips_finished_parts(tiny_run, monkeypatch):
    import controlnet.cli

    module = load(NAME)
    monkeypatch.setattr(controlnet.cli, "main", lambda *a: pytest.fail("a command (export, train, evaluate) ran"))
    monkeypatch.setattr(module.exp1, "read_curve", lambda *a: pytest.fail("the curves were read again"))
    before = json.loads((tiny_run / f"{NAME}.json").read_text())["parts"]
    assert module.main(["--tiny", "-o", str(tiny_run)]) == 0
    assert json.loads((tiny_run / f"{NAME}.json").read_text())["parts"] == before


@pytest.mark.parametrize("argv", [["--tiny"], ["--tiny", "-o", str(ROOT / "docs" / "reproduction")]])
def test_tiny_never_writes_over_the_real_results(argv):
    with pytest.raises(InputError, match="-o FOLDER"):
        load(NAME).main(argv)
