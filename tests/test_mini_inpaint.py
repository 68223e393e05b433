"""The miniature inpainting ControlNet: the world's inpaint maps, how the trainer reads them, the
recipe that trains it, and the shipped one filling held-out masks better than no control."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.annotators import map_to_hint
from controlnet.assets import HELD_OUT_SEED, MINI_DIR, available_controlnets
from controlnet.training.data import Processing
from controlnet.world import World
from controlnet.world.export import export


@pytest.fixture(scope="module")
def samples():
    return list(World(seed=5, size=64, conditions=("inpaint",)).take(40))


def test_inpaint_maps_hide_part_of_the_shapes_and_keep_the_picture(samples):
    fractions = []
    for s in samples:
        rgba = s.conditions["inpaint"]
        assert rgba.shape == (64, 64, 4) and rgba.dtype == np.uint8
        assert np.array_equal(rgba[:, :, :3], s.image)
        assert set(np.unique(rgba[:, :, 3])) <= {0, 255}  # binary, as the inpaint convention requires
        mask = rgba[:, :, 3] == 255
        shapes = s.labels > 0
        assert (mask & shapes).any(), "every mask hides part of a shape"
        assert (shapes & ~mask).any(), "and leaves some of the shapes in view"
        fractions.append(mask.mean())
    assert 0.05 < np.mean(fractions) < 0.4 and max(fractions) < 0.75


def test_inpaint_maps_are_reproducible_and_leave_the_world_unchanged(samples):
    again = World(seed=5, size=64, conditions=("inpaint", "edges"))[3]
    assert np.array_equal(again.conditions["inpaint"], samples[3].conditions["inpaint"])
    assert np.array_equal(again.image, World(seed=5, size=64, conditions=("edges",))[3].image)
    big = World(seed=5, size=256, conditions=("inpaint",))[3].conditions["inpaint"][:, :, 3] > 127
    down = big.reshape(64, 4, 64, 4).mean(axis=(1, 3)) > 0.5
    assert np.mean(down != (samples[3].conditions["inpaint"][:, :, 3] > 127)) < 0.05  # unit coordinates


def test_the_hint_is_minus_one_exactly_in_the_mask(samples):
    s = samples[0]
    hint = map_to_hint(s.conditions["inpaint"])
    mask = s.conditions["inpaint"][:, :, 3] == 255
    assert (hint[mask] == -1).all()
    assert np.array_equal(hint[~mask], s.image[~mask].astype(np.float32) / 255)


def test_the_pipeline_reads_a_world_inpaint_map_as_minus_one_in_the_mask(samples):
    from controlnet.pipeline.images import hint_tensor

    s = samples[1]
    hint = hint_tensor(s.conditions["inpaint"], 64, 64, None)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(hint, map_to_hint(s.conditions["inpaint"]))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return export(tmp_path_factory.mktemp("inpaint") / "data", 3, layout="imagefolder", condition="inpaint",
                  seed=5, progress=False)


def _record(folder: Path, k: int) -> dict:
    row = json.loads((folder / "metadata.jsonl").read_text().splitlines()[k])
    return {"target": row["image"], "condition": row["conditioning_image"], "prompt": row["text"], "key": str(k)}


@pytest.mark.parametrize("resolution", [64, 32])
def test_the_trainer_reads_exported_inpaint_maps_as_minus_one_hints(exported, samples, resolution):
    for k in range(3):
        hint = Processing(resolution=resolution, inpaint_maps=True)(_record(exported, k), exported)["hint"]
        rgba = samples[k].conditions["inpaint"]
        if resolution == 64:
            assert torch.equal(hint, torch.from_numpy(map_to_hint(rgba)).permute(2, 0, 1))
        mask = (hint == -1).all(dim=0)
        assert (hint[:, mask] == -1).all() and ((hint[:, ~mask] >= 0) & (hint[:, ~mask] <= 1)).all()
        expected = rgba[:, :, 3].reshape(resolution, 64 // resolution, resolution, 64 // resolution).mean((1, 3))
        assert np.array_equal(mask.numpy(), expected > 127)


def test_without_the_inpaint_setting_alpha_stays_transparency(exported):
    hint = Processing(resolution=64)(_record(exported, 0), exported)["hint"]
    assert hint.min() >= 0  # composited on white, the rule for transparent sketches


def test_controlnet_train_inpaint_maps_reaches_the_data_reader():
    import argparse

    from controlnet.cli import train as train_cli
    from controlnet.training.loop import _processing

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers(dest="command"))
    for flag, expected in (("--inpaint-maps", True), ("--no-inpaint-maps", False)):
        args = parser.parse_args(["train", "--base-model", "m", "--data", "d", flag])
        assert _processing(train_cli.config_from_args(args)).inpaint_maps is expected


def test_the_recipe_trains_an_inpaint_controlnet_on_rgba_maps(tmp_path):
    from controlnet.mini import MiniConfig
    from controlnet.mini.controlnet_stage import _train_settings

    assert "inpaint" in MiniConfig().controlnet_conditions and "inpaint" in MiniConfig.tiny().controlnet_conditions
    settings = _train_settings(Path("model"), tmp_path, "inpaint", 2, 0, 64, False, batch_size=2, learning_rate=1e-3)
    assert settings["inpaint_maps"] is True and settings["validation_annotator"] is None
    hint = Processing(resolution=64, inpaint_maps=True)(_record(tmp_path / "data", 0), tmp_path / "data")["hint"]
    assert (hint == -1).any()
    assert _train_settings(Path("model"), tmp_path / "e", "edges", 2, 0, 64, False)["inpaint_maps"] is False


def test_an_interrupted_controlnet_stage_is_neither_installed_nor_done(tmp_path, monkeypatch):
    import controlnet.training
    from controlnet.mini import controlnet_stage
    from controlnet.training.loop import TrainResult

    monkeypatch.setattr(controlnet_stage, "_train_settings", lambda *a, **k: {})
    monkeypatch.setattr(controlnet.training, "TrainConfig", lambda **k: k)
    monkeypatch.setattr(controlnet.training, "train", lambda c: TrainResult(tmp_path, step=3, interrupted=15, log=[{"samples_per_s": 1.0}] * 3))
    with pytest.raises(KeyboardInterrupt, match="rerun to resume"):
        controlnet_stage.train_controlnet(tmp_path / "model", tmp_path / "work", "inpaint", 60, calibration_steps=2)
    assert not (tmp_path / "work" / "report.json").exists() and not (tmp_path / "model" / "controlnet-inpaint").exists()


def test_demo_rows_show_the_masked_picture_and_both_fills(tmp_path):
    from controlnet.checkpoints import load_controlnet
    from controlnet.mini.inpaint import demo_rows
    from controlnet.pipeline import ControlPipeline
    from controlnet.world.grid import SCALE
    from test_demo import random_mini

    model = random_mini(tmp_path / "mini")
    pipe = ControlPipeline.from_pretrained(model)
    picked = list(World(seed=HELD_OUT_SEED, size=64, conditions=("inpaint",)).take(2))
    rows = demo_rows(pipe, load_controlnet(model / "controlnet-inpaint"), picked, dict(steps=2, guidance_scale=5.0,
                     weight=1.0, seed=0, progress=False))
    assert len(rows) == 2 and all(len(r) == 4 and r[0].shape == (64 * SCALE, 64 * SCALE, 3) for r in rows)
    masked, plain, controlled, outlined = (c.astype(int) for c in rows[0])
    mask = np.kron(picked[0].conditions["inpaint"][:, :, 3] > 127, np.ones((SCALE, SCALE), bool))
    assert np.array_equal(masked[~mask], np.kron(picked[0].image, np.ones((SCALE, SCALE, 1), int))[~mask])
    assert np.abs(plain - controlled).mean() > 1  # the (random) ControlNet changes the fill
    drawn = (outlined != controlled).any(axis=2)
    assert drawn.any() and drawn.mean() < 0.25  # the mask's outline, not a filled area


@pytest.mark.skipif("inpaint" not in available_controlnets(), reason="the built-in inpainting ControlNet is not installed")
def test_the_shipped_inpaint_controlnet_fills_masks_better_than_no_control():
    from controlnet.assets import mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.mini.inpaint import fill, masked_label_accuracy
    from controlnet.pipeline import ControlPipeline

    torch.set_num_threads(1)
    pipe = ControlPipeline.from_pretrained(MINI_DIR)
    held_out = list(World(seed=HELD_OUT_SEED, size=64, conditions=("inpaint",)).take(16, start=40_000))
    common = dict(steps=10, guidance_scale=2.0, seed=0, progress=False)  # its recommended CFG and weight
    controlled = fill(pipe, held_out, load_controlnet(mini_controlnet_dir("inpaint")), weight=2.0, **common)
    plain = fill(pipe, held_out, None, **common)
    with_control = np.mean([masked_label_accuracy(im, s) for im, s in zip(controlled, held_out)])
    without = np.mean([masked_label_accuracy(im, s) for im, s in zip(plain, held_out)])
    assert with_control > without
