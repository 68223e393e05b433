"""Experiment 7 (Tables 2–3 in miniature, experiments/exp7_tables.py): its --tiny run trains the seg
ControlNet and ControlNet-lite with Experiment 1's training arguments (the arms differ in `--copy
lite` only), evaluates no control, both arms, the shipped seg ControlNet and the true pictures on
world:seg, and writes finite numbers, tables and figures; a rerun skips what is done; it never
writes over the real results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from controlnet.errors import InputError
from test_experiments import ROOT, check_png, finite_results, load, tiny_run_fixture

NAME = "exp7_tables"


tiny_run = tiny_run_fixture(NAME)


def _config(path):
    return json.loads(path.read_text())


def test_every_row_is_scored_with_finite_numbers(tiny_run):
    data = finite_results(tiny_run, NAME)
    parts = data["parts"]
    got = {(r["row"], r["prompt"], r["metric"]) for r in parts["eval"]["records"]}
    for row in ("no control", "lite", "zero", "shipped", "truth", "truth_other"):
        for prompt in ("perfect", "none"):
            assert {(row, prompt, "label_miou"), (row, prompt, "label_accuracy")} <= got, (row, prompt)
    settings = parts["eval"]["settings"]
    assert (settings["guidance_scale"], settings["weight"], settings["mode"]) == (5.0, 1.0, "balanced")
    assert settings["data"] == "world:seg"
    truth = [r for r in parts["eval"]["records"] if r["row"] == "truth" and r["metric"] == "label_miou"]
    assert all(r["value"] == 1.0 for r in truth), "the world's exact labels re-detect the true pictures exactly"
    layout = {(r["row"], r["prompt"]) for r in parts["layout"]["records"]}
    paired = {(r["a"], r["b"], r["prompt"], r["metric"]) for r in parts["layout"]["paired"]}
    assert ("zero", "lite", "none", "layout_miou") in paired and ("zero", "lite", "perfect", "label_miou") in paired
    assert layout == {(row, p) for row in ("no control", "lite", "zero", "shipped", "truth")
                      for p in ("perfect", "none")}
    assert set(parts["curves"]) == {"zero", "lite"} and all(parts["curves"].values())
    assert len({v["sha256_16"] for v in data["header"]["arms"].values()}) == 2
    for png in (f"{NAME}.png", f"{NAME}_samples.png"):
        check_png(tiny_run / png)


def test_arms_differ_only_in_the_copy_flag_and_train_on_seg_pairs(tiny_run):
    work = tiny_run / "work" / NAME
    zero, lite = (_config(work / f"run-{arm}" / "train_config.json") for arm in ("zero", "lite"))
    assert {k for k in zero.keys() | lite.keys() if zero.get(k) != lite.get(k)} == {"output_dir", "copy"}
    assert (zero["copy"], lite["copy"]) == ("full", "lite")
    exp1 = _config(work / "exp1" / "run" / "train_config.json")
    changed = {k for k in exp1.keys() | zero.keys() if exp1.get(k) != zero.get(k)}
    assert changed <= {"output_dir", "data", "cache_dir", "validation_images", "validation_prompts",
                       "validation_annotator", "validate_every"}, changed
    assert _config(work / "data" / "world.json")["condition"] == "seg"


def test_rerun_skips_finished_parts(tiny_run, monkeypatch):
    module = load(NAME)
    monkeypatch.setattr(module, "evaluate", lambda *a: pytest.fail("the evaluation ran again"))
    monkeypatch.setattr(module, "read_curve", lambda *a: pytest.fail("the curves were read again"))
    monkeypatch.setattr(module, "train_args", lambda *a: pytest.fail("a finished arm was trained again"))
    before = json.loads((tiny_run / f"{NAME}.json").read_text())["parts"]
    assert module.main(["--tiny", "-o", str(tiny_run)]) == 0
    assert json.loads((tiny_run / f"{NAME}.json").read_text())["parts"] == before


@pytest.mark.parametrize("argv", [["--tiny"], ["--tiny", "-o", str(ROOT / "docs" / "reproduction")]])
def test_tiny_never_writes_over_the_real_results(argv):
    with pytest.raises(InputError, match="-o FOLDER"):
        load(NAME).main(argv)


def test_layout_miou_is_blind_to_colour_but_not_to_the_layout():
    from controlnet.world import World
    from controlnet.world.palette import COLOURS

    module = load(NAME)
    world = World(seed=3, size=64)
    single = next(world[i] for i in range(50) if len({s.colour for s in world[i].scene.shapes}
                                                      | {world[i].scene.background}) == 2)
    assert module.layout_miou(single.image, single) == 1.0
    recoloured = np.zeros_like(single.image)  # the same regions painted in other world colours
    used = {s.colour for s in single.scene.shapes} | {single.scene.background}
    spare = [c for c in COLOURS if c not in used]
    for region in np.unique(single.labels):
        recoloured[single.labels == region] = COLOURS[spare[int(region)]]
    assert module.layout_miou(recoloured, single) == 1.0
    other = next(world[i] for i in range(50, 100) if world[i].labels.any())
    assert module.layout_miou(other.image, single) < 0.9
