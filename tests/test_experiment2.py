"""Experiment 2 (the §4.2 ablation, experiments/exp2_ablation.py): its --tiny run trains the two
ablation arms with Experiment 1's exact training arguments but the one changed flag, evaluates the
three arms under the four prompt settings, and writes finite numbers and figures; a rerun skips
what is done; it never writes over the real results."""

from __future__ import annotations

import json
import shutil

import pytest

from controlnet.errors import InputError
from test_experiments import ROOT, check_png, finite_results, load, tiny_run_fixture

NAME = "exp2_ablation"


tiny_run = tiny_run_fixture(NAME)


def test_tiny_run_scores_every_arm_under_every_prompt(tiny_run):
    data = finite_results(tiny_run, NAME)
    parts = data["parts"]
    got = {(r["row"], r["prompt"], r["metric"]) for r in parts["eval"]["records"]}
    for row in ("no control", "zero", "gaussian", "lite"):
        for prompt in ("none", "insufficient", "conflicting", "perfect"):
            assert {(row, prompt, "edge_f1"), (row, prompt, "prompt_adherence")} <= got
    settings = parts["eval"]["settings"]
    assert (settings["guidance_scale"], settings["weight"], settings["mode"]) == (5.0, 1.0, "balanced")
    assert set(parts["curves"]) == {"zero", "gaussian", "lite"} and all(parts["curves"].values())
    hashes = {v["sha256_16"] for v in data["header"]["arms"].values()}
    assert len(hashes) == 3, "the three arms are three different networks"
    for png in (f"{NAME}.png", f"{NAME}_curves.png", f"{NAME}_samples.png"):
        check_png(tiny_run / png)


def test_arms_differ_from_experiment_1_by_their_one_flag(tiny_run):
    work = tiny_run / "work" / NAME
    base = json.loads((work / "exp1" / "run" / "train_config.json").read_text())
    for arm, changed in (("gaussian", {"connection_init": "gaussian"}), ("lite", {"copy": "lite"})):
        cfg = json.loads((work / f"run-{arm}" / "train_config.json").read_text())
        diff = {k for k in base.keys() | cfg.keys() if base.get(k) != cfg.get(k)}
        assert diff == {"output_dir", *changed}, arm
        assert all(cfg[k] == v for k, v in changed.items())


def test_rerun_skips_finished_parts(tiny_run, monkeypatch):
    module = load(NAME)
    monkeypatch.setattr(module, "evaluate", lambda *a: pytest.fail("the evaluation ran again"))
    monkeypatch.setattr(module.exp1, "read_curve", lambda *a: pytest.fail("the curves were read again"))
    before = json.loads((tiny_run / f"{NAME}.json").read_text())["parts"]
    assert module.main(["--tiny", "-o", str(tiny_run)]) == 0
    assert json.loads((tiny_run / f"{NAME}.json").read_text())["parts"] == before


@pytest.mark.parametrize("argv", [["--tiny"], ["--tiny", "-o", str(ROOT / "docs" / "reproduction")]])
def test_tiny_never_writes_over_the_real_results(argv):
    with pytest.raises(InputError, match="-o FOLDER"):
        load(NAME).main(argv)


def test_partial_without_checkpoints_is_one_clear_error(tiny_run, tmp_path, monkeypatch):
    module = load(NAME)
    monkeypatch.setattr(module, "tiny_exp1", lambda work: tiny_run / "work" / NAME / "exp1" / "run")
    with pytest.raises(InputError, match="neither final weights nor a checkpoint"):
        module.main(["--tiny", "-o", str(tmp_path), "--partial"])
    assert not (tmp_path / f"{NAME}.json").exists()


def test_an_unfinished_arm_is_its_latest_checkpoint(tmp_path):
    module = load(NAME)
    for step in (166, 332):
        (tmp_path / "checkpoints" / f"step-{step:06d}" / "controlnet").mkdir(parents=True)
        (tmp_path / "checkpoints" / f"step-{step:06d}" / "controlnet" / "w").write_text(str(step))
        (tmp_path / "checkpoints" / f"step-{step:06d}" / "state.json").write_text(json.dumps({"step": step}))
    weights, step = module.trained_weights(tmp_path)
    assert step == 332 and (weights / "w").read_text() == "332"
    shutil.rmtree(tmp_path / "checkpoints")  # the trainer deletes old checkpoints: the copy stays
    assert (weights / "w").read_text() == "332"
