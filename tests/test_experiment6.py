"""Experiment 6 (transfer to a community model, experiments/exp6_transfer.py): the restyle exchanges
the world's colours as defined; its --tiny run fine-tunes the base U-Net, `controlnet transfer`s
the edges ControlNet by exactly (community - base), scores every row with finite numbers and
draws its figures; a rerun skips what is done; it never writes over the real results."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from controlnet.errors import InputError
from test_experiments import ROOT, check_png, finite_results, load

NAME = "exp6_transfer"
WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def exp6():
    return load(NAME)


@pytest.fixture(scope="module")
def tiny_run(exp6, tmp_path_factory):
    out = tmp_path_factory.mktemp("exp6")
    assert exp6.main(["--tiny", "-o", str(out)]) == 0
    return out


def test_restyle_exchanges_every_colour_and_keeps_the_rest(exp6):
    from controlnet.world import COLOURS, World
    from controlnet.world.palette import texture_tint

    assert all(exp6.SWAP[exp6.SWAP[c]] == c != exp6.SWAP[c] for c in COLOURS), "pairs exchanged, none fixed"
    world = World(seed=1, size=64)
    for sample in (world[i] for i in range(10)):
        new = exp6.restyle(sample)
        assert new.caption == sample.caption and new.labels is sample.labels
        assert all(np.array_equal(new.conditions[k], v) for k, v in sample.conditions.items())
        bg, bg_new = COLOURS[sample.scene.background], COLOURS[exp6.SWAP[sample.scene.background]]
        for old_rgb, new_rgb in ((bg, bg_new), (texture_tint(bg), texture_tint(bg_new))):
            where = (sample.labels == 0) & (sample.image == old_rgb).all(-1)
            assert (new.image[where] == new_rgb).all()
        assert ((sample.labels == 0) <= (sample.image == bg).all(-1) | (sample.image == texture_tint(bg)).all(-1)).all()
        for k, shape in enumerate(sample.scene.shapes):
            assert (new.image[sample.labels == k + 1] == COLOURS[exp6.SWAP[shape.colour]]).all()
        assert np.array_equal(exp6.restyle(new).image, sample.image)


def test_transfer_moves_the_copy_by_exactly_community_minus_base(tiny_run):
    from controlnet.assets import mini_controlnet_dir, mini_model_dir

    folder = next((tiny_run / "work" / NAME).glob("community-*"))
    control = load_file(mini_controlnet_dir("edges") / WEIGHTS)
    moved = load_file(folder / "transferred-edges" / WEIGHTS)
    base, community = load_file(mini_model_dir() / "unet" / WEIGHTS), load_file(folder / "model" / "unet" / WEIGHTS)
    copied = [k for k in control if k in base]
    assert len(copied) > 100 and control.keys() == moved.keys()
    for k in copied:
        want = (control[k].float() + community[k].float() - base[k].float()).to(control[k].dtype)
        assert torch.equal(moved[k], want), k
    assert sum(not torch.equal(moved[k], control[k]) for k in copied) > len(copied) // 2, "the fine-tune moved the U-Net"
    assert all(torch.equal(moved[k], control[k]) for k in control if k not in base), "hint encoder, zero convs kept"
    for part in ("vae", "text_encoder"):  # only the U-Net is fine-tuned
        name = "model.safetensors" if part == "text_encoder" else WEIGHTS
        a, b = load_file(mini_model_dir() / part / name), load_file(folder / "model" / part / name)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_run_scores_every_row_with_finite_numbers(exp6, tiny_run):
    data = finite_results(tiny_run, NAME)
    parts = data["parts"]
    for prompt in ("perfect", "none"):
        for row in (*exp6.TRUTH_ROWS, *exp6.ROWS):
            assert set(exp6.METRICS) <= set(parts[f"{prompt}|{row}"]), (prompt, row)
        assert set(exp6.METRICS) < set(parts[f"{prompt}|transferred - untransferred"])
    true, restyled = parts["perfect|true pictures"], parts["perfect|restyled true pictures"]
    assert true["base_palette_accuracy"]["value"] == 1.0 == restyled["community_palette_accuracy"]["value"]
    assert true["community_palette_accuracy"]["value"] == 0.0 == restyled["base_palette_accuracy"]["value"]
    assert parts["transfer"]["max_abs_error_vs_offset"] == 0.0 and parts["transfer"]["others_unchanged"]
    assert (data["header"]["cfg"], data["header"]["weight"]) == (5.0, 1.0)
    for png in (f"{NAME}.png", f"{NAME}_samples.png"):
        check_png(tiny_run / png)


def test_rerun_skips_finished_parts(exp6, tiny_run, monkeypatch):
    from controlnet.pipeline import ControlPipeline

    monkeypatch.setattr(exp6, "_finetune", lambda *a: pytest.fail("the fine-tune ran again"))
    monkeypatch.setattr("controlnet.cli.main", lambda *a: pytest.fail("the transfer ran again"))
    monkeypatch.setattr(ControlPipeline, "__call__", lambda *a, **k: pytest.fail("a picture was sampled again"))
    before = json.loads((tiny_run / f"{NAME}.json").read_text())["parts"]
    assert exp6.main(["--tiny", "-o", str(tiny_run)]) == 0
    assert json.loads((tiny_run / f"{NAME}.json").read_text())["parts"] == before


@pytest.mark.parametrize("argv", [["--tiny"], ["--tiny", "-o", str(ROOT / "docs" / "reproduction")]])
def test_tiny_never_writes_over_the_real_results(exp6, argv):
    with pytest.raises(InputError, match="-o FOLDER"):
        exp6.main(argv)


def test_controlnet_text_override_is_exact_where_it_changes_nothing(exp6, tiny_run):
    """The diagnostic that lets the ControlNet alone read the empty prompt gives, when the prompt is
    empty anyway, the very pictures of the plain row; with a caption it changes them."""
    import argparse

    import common  # the experiments' shared module: `load` put its folder on sys.path

    work = tiny_run / "work" / NAME
    results = common.Results(tiny_run / f"{NAME}.json", json.loads((tiny_run / f"{NAME}.json").read_text())["header"])
    state = exp6.prepare(results, work, exp6.Finetune.tiny(), results.data["header"]["weights"]["sha256_16"], 2)
    args = argparse.Namespace(steps=2, cfg=5.0, weight=1.0)
    row = "base + edges, ControlNet reads no caption"
    same = exp6.pictures(state, work, row, "none", args), exp6.pictures(state, work, "base + edges", "none", args)
    assert all(np.array_equal(a, b) for a, b in zip(*same))
    other = exp6.pictures(state, work, row, "perfect", args), exp6.pictures(state, work, "base + edges", "perfect", args)
    assert not all(np.array_equal(a, b) for a, b in zip(*other))
