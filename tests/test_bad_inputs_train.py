"""Bad inputs to `controlnet train` and `train(TrainConfig(...))`: each is refused before the first
training step with one line naming the input (exit 2, no traceback), leaves no file behind, and
never loses a checkpoint; plots are optional. Runs use the tiny base model and 1-2 steps."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, full_disk, needs_posix, read_only, run_cli, snapshot, unchanged
from controlnet.errors import InputError
from controlnet.training import TrainConfig, make_fill50k, make_tiny_base, train

RES = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-train")
    base = make_tiny_base(root / "base")
    data = make_fill50k(root / "fill", n=8, size=32)
    return {"root": root, "base": str(base), "data": str(data), "cond": str(data / "source" / "0.png")}


def argv(world, out, *extra):
    return ["train", "--base-model", world["base"], "--data", world["data"], "--output-dir", str(out),
            "--resolution", str(RES), "--report-to", "none", "--no-progress", "--max-steps", "1", *extra]


@pytest.fixture(scope="module")
def trained(world):
    """A 2-step run with a checkpoint at each step (copied by the tests that damage it)."""
    out = world["root"] / "trained"
    code, _, err = run_cli(argv(world, out, "--max-steps", "2", "--checkpoint-every", "1"), _NoCapture())
    assert code == 0, err
    return out


class _NoCapture:
    """run_cli's capsys for a module fixture (output goes to the terminal)."""

    def readouterr(self):
        return "", ""


# ---------------------------------------------------------------- values, refused before anything loads

VALUES = [
    (["--checkpoint-every", "0"], ["--checkpoint-every", "got 0"]),
    (["--log-every", "0"], ["--log-every", "got 0"]),
    (["--validate-every", "-1"], ["--validate-every", "got -1"]),
    (["--resolution", "0"], ["--resolution", "got 0"]),
    (["--resolution", "-64"], ["--resolution", "got -64"]),
    (["--resolution", "20"], ["--resolution", "multiple of 8"]),
    (["--learning-rate", "-1e-4"], ["--learning-rate", "-0.0001"]),
    (["--learning-rate=-1e-4"], ["--learning-rate", "-0.0001"]),
    (["--learning-rate", "nan"], ["--learning-rate", "finite"]),
    (["--learning-rate", "inf"], ["--learning-rate", "finite"]),
    (["--learning-rate", "0"], ["--learning-rate", "got 0"]),
    (["--decoder-learning-rate", "-1"], ["--decoder-learning-rate"]),
    (["--batch-size", "0"], ["--batch-size", "got 0"]),
    (["--max-steps", "0"], ["--max-steps", "got 0"]),
    (["--max-steps", "-5"], ["--max-steps", "got -5"]),
    (["--gradient-accumulation-steps", "0"], ["--gradient-accumulation-steps"]),
    (["--keep-checkpoints", "0"], ["--keep-checkpoints"]),
    (["--empty-prompt-prob", "1.5"], ["--empty-prompt-prob", "1.5"]),
    (["--empty-prompt-prob", "nan"], ["--empty-prompt-prob", "finite"]),
    (["--guidance-scale", "1e30"], ["--guidance-scale", "[0, 100]"]),  # an all-black validation grid (issue 19)
    (["--validation-prompts", "a red circle"], ["--validation-prompts do nothing without --validation-images"]),
    (["--validation-annotator", "canny"], ["--validation-annotator do nothing without --validation-images"]),
    (["--validation-images", "x.png", "--validation-prompts", "(red:" + "9" * 400 + ")"],
     ["--validation-prompts", "weight of 'red' is inf"]),
    (["--max-grad-norm", "0"], ["--max-grad-norm"]),
    (["--adam-beta1", "1"], ["--adam-beta1"]),
    (["--adam-epsilon", "-1e-8"], ["--adam-epsilon"]),
    (["--guidance-scale", "nan"], ["--guidance-scale", "finite"]),
    (["--num-validation-samples", "0"], ["--num-validation-samples"]),
    (["--validation-steps", "0"], ["--validation-steps"]),
    (["--max-train-samples", "0"], ["--max-train-samples"]),
    (["--lr-warmup-steps", "-1"], ["--lr-warmup-steps"]),
    (["--num-workers", "-1"], ["--num-workers"]),
    (["--annotator", "no-such-annotator"], ["--annotator", "no-such-annotator"]),
    (["--validation-annotator", "cany"], ["--validation-annotator", "canny"]),  # with a suggestion
    (["--validation-images", "x.png", "y.png", "--validation-prompts", "a", "b", "c"], ["--validation-prompts"]),
]


@pytest.mark.parametrize("extra, fragments", VALUES, ids=[" ".join(v[0])[:40] for v in VALUES])
def test_bad_value_is_one_clear_line(world, tmp_path, capsys, extra, fragments):
    with unchanged(tmp_path):
        assert_user_error(argv(world, tmp_path / "out", *extra), capsys, *fragments)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_not_a_number_is_a_usage_error(world, tmp_path, capsys):
    assert_user_error(argv(world, tmp_path / "out", "--max-steps", "ten"), capsys, "--max-steps", "invalid int")


# ---------------------------------------------------------------- files and folders, checked before step 1


def _text_file(path, text="not an image"):
    path.write_text(text)
    return path


def _empty_fill50k(path):
    path.mkdir()
    (path / "prompt.json").write_text("")
    return path


def _empty_image_folder(path):
    path.mkdir()
    (path / "metadata.jsonl").write_text("\n")
    return path


PLACES = [
    ("data missing", lambda t: ["--data", str(t / "nowhere")], ["nowhere", "does not exist"]),
    ("data empty folder", lambda t: ["--data", str((t / "empty").mkdir() or t / "empty")], ["cannot tell the format"]),
    ("data no pairs (fill50k)", lambda t: ["--data", str(_empty_fill50k(t / "f"))], ["no pairs"]),
    ("data no pairs (folder)", lambda t: ["--data", str(_empty_image_folder(t / "g"))], ["no pairs"]),
    ("data wrong format", lambda t: ["--data", str(_empty_image_folder(t / "h")), "--data-format", "fill50k"],
     ["prompt.json"]),
    ("validation image missing", lambda t: ["--validation-images", str(t / "missing.png")],
     ["--validation-images", "missing.png"]),
    ("validation image not an image", lambda t: ["--validation-images", str(_text_file(t / "v.png"))],
     ["--validation-images", "v.png", "not a readable image"]),
    ("base model missing", lambda t: ["--base-model", str(t / "nobase")], ["nobase", "model_index.json"]),
    ("base model a file", lambda t: ["--base-model", str(_text_file(t / "b.txt"))], ["b.txt", "model_index.json"]),
    ("controlnet missing", lambda t: ["--controlnet", str(t / "nocn")], ["--controlnet", "nocn"]),
    ("resume not a checkpoint", lambda t: ["--resume", str((t / "r").mkdir() or t / "r")], ["not a training checkpoint"]),
]


@pytest.mark.parametrize("make, fragments", [p[1:] for p in PLACES], ids=[p[0] for p in PLACES])
def test_bad_place_is_refused_before_training(world, tmp_path, capsys, make, fragments):
    extra = make(tmp_path)
    with unchanged(tmp_path):
        assert_user_error(argv(world, tmp_path / "out", *extra), capsys, *fragments)
    assert not (tmp_path / "out" / "train_log.jsonl").exists()  # no step ran


@pytest.mark.parametrize("inside", [False, True])
def test_output_dir_among_the_data_is_refused(world, tmp_path, capsys, inside):
    data = tmp_path / "data"
    shutil.copytree(world["data"], data)
    out = data / "run" if inside else data
    with unchanged(tmp_path):
        assert_user_error(argv(world, out, "--data", str(data)), capsys, "--output-dir",
                          "is inside --data" if inside else "is --data")


def test_inpaint_maps_without_alpha_are_refused(world, tmp_path, capsys):
    """fill50k's RGB maps trained silently with no repaint region (issue 19)."""
    with unchanged(world["root"] / "fill"):
        assert_user_error(argv(world, tmp_path / "out", "--inpaint-maps"), capsys, "no alpha channel",
                          "--inpaint-maps")
    assert not (tmp_path / "out" / "train_log.jsonl").exists()


def test_inpaint_map_without_a_repaint_region_is_a_bad_sample(tmp_path):
    from controlnet.training.data import BadSample, decode_map

    clear = np.zeros((8, 8, 4), np.uint8)  # alpha 0 everywhere
    with pytest.raises(BadSample, match="marks no pixel to repaint"):
        decode_map(clear, inpaint=True)
    clear[2:4, 2:4, 3] = 255
    assert decode_map(clear, inpaint=True).shape == (8, 8, 4)


def test_output_dir_that_is_a_file(world, tmp_path, capsys):
    out = _text_file(tmp_path / "out", "the user's notes")
    with unchanged(tmp_path):
        assert_user_error(argv(world, out), capsys, "--output-dir", "is a file")


@needs_posix
def test_read_only_output_dir(world, tmp_path, capsys):
    out = tmp_path / "locked"
    with read_only(out):
        assert_user_error(argv(world, out), capsys, "--output-dir", "not writable")
    assert not any(out.iterdir())


def test_fresh_run_into_a_folder_with_checkpoints(world, trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    with unchanged(out):
        assert_user_error(argv(world, out, "--max-steps", "3"), capsys, "--resume latest", "earlier run")


def test_controlnet_of_another_family(world, tmp_path, capsys):
    from controlnet.nn import ControlNet
    from controlnet.tiny import tiny_unet

    other = tmp_path / "sd2-controlnet"
    ControlNet.from_unet(tiny_unet("sd2"), vae_scale_factor=2).save_pretrained(other)
    with unchanged(tmp_path):
        err = assert_user_error(argv(world, tmp_path / "out", "--controlnet", str(other)), capsys,
                                "another base model", "cross_attention_dim")
    assert "mat1" not in err


# ---------------------------------------------------------------- resuming from damaged checkpoints


def _truncate(path, keep=100):
    path.write_bytes(path.read_bytes()[:keep])


def test_resume_latest_skips_a_truncated_newest(world, trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    _truncate(out / "checkpoints" / "step-000002" / "controlnet" / "diffusion_pytorch_model.safetensors")
    code, _, err = run_cli(argv(world, out, "--max-steps", "2", "--resume", "latest"), capsys)
    assert code == 0, err
    assert "skipping incomplete checkpoint" in err and "step-000002" in err and "truncated" in err
    assert "resuming from" in err and "step-000001" in err
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]  # step 2 trained again from step 1


@pytest.mark.parametrize("damage", ["optimizer.pt", "state.json"])
def test_resume_when_no_checkpoint_is_complete(world, trained, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    for ckpt in (out / "checkpoints").iterdir():
        _truncate(ckpt / damage, keep=10)
    with unchanged(out):
        assert_user_error(argv(world, out, "--max-steps", "3", "--resume", "latest"), capsys,
                          "no complete checkpoint", damage)


def test_resume_an_incomplete_checkpoint_by_name(world, trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    ckpt = out / "checkpoints" / "step-000002"
    (ckpt / "scheduler.pt").unlink()
    with unchanged(out):
        assert_user_error(argv(world, out, "--max-steps", "3", "--resume", str(ckpt)), capsys,
                          "incomplete", "scheduler.pt is missing")


# ---------------------------------------------------------------- runs that must finish or keep what they had


def test_base_model_mini_is_accepted(world, tmp_path, capsys):
    """`generate --model mini` works, so does `train --base-model mini`."""
    out = tmp_path / "out"
    args = argv(world, out, "--base-model", "mini", "--resolution", "64", "--batch-size", "1")
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert (out / "diffusion_pytorch_model.safetensors").is_file()


def test_without_matplotlib_the_run_finishes(world, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    out = tmp_path / "out"
    code, stdout, err = run_cli(argv(world, out), capsys)
    assert code == 0, err
    assert "install matplotlib for loss.png" in err and "Traceback" not in err
    assert (out / "diffusion_pytorch_model.safetensors").is_file() and (out / "README.md").is_file()
    assert not (out / "loss.png").exists()


def test_full_disk_at_a_checkpoint_keeps_the_previous_one(world, trained, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = snapshot(out / "checkpoints")
    with full_disk(64 * 1024):  # the ControlNet's weights are larger: the checkpoint write fails
        code, _, err = run_cli(argv(world, out, "--max-steps", "3", "--resume", "latest"), capsys)
    assert code == 1 and "disk is full" in err and "Traceback" not in err, err
    assert snapshot(out / "checkpoints") == before  # both earlier checkpoints whole, nothing half-written
    assert not list(out.rglob(".*tmp*"))


# ---------------------------------------------------------------- the Python API


def test_data_given_as_one_string(world):
    """A string is one path, not a list of one-character paths (which scanned the file system from /)."""
    config = TrainConfig(base_model=world["base"], data=world["data"], validation_images=world["cond"],
                         validation_prompts="a red circle")
    assert config.data == [world["data"]] and config.validation_images == [world["cond"]]
    assert config.validation_prompts == ["a red circle"]
    assert config.validate() is config


def test_paths_as_pathlib(world, tmp_path):
    from pathlib import Path

    config = TrainConfig(base_model=Path(world["base"]), data=Path(world["data"]), output_dir=tmp_path / "o")
    assert config.data == [world["data"]] and config.base_model == world["base"]
    config.save(tmp_path / "c.json")  # Paths would not serialise
    assert TrainConfig.from_dict(json.loads((tmp_path / "c.json").read_text())) == config


@pytest.mark.parametrize("field, value, fragment", [
    ("data", 123, "data"),
    ("data", [None], "data"),
    ("learning_rate", "fast", "--learning-rate"),
    ("batch_size", 2.5, "--batch-size"),
    ("resolution", True, "--resolution"),
    ("report_to", "wandb", "report-to"),
])
def test_api_wrong_types_are_input_errors(world, tmp_path, field, value, fragment):
    config = TrainConfig(base_model=world["base"], data=[world["data"]], output_dir=str(tmp_path / "o"))
    setattr(config, field, value)
    with pytest.raises(InputError, match=fragment):
        train(config)
    assert not (tmp_path / "o").exists()


def test_validation_image_checked_before_step_one_in_the_api(world, tmp_path):
    bad = tmp_path / "cond.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad)
    bad.write_bytes(bad.read_bytes()[:20])  # truncated PNG
    config = TrainConfig(base_model=world["base"], data=world["data"], output_dir=str(tmp_path / "o"),
                         resolution=RES, max_steps=1, report_to="none", progress=False, validation_images=str(bad))
    with pytest.raises(InputError, match="cond.png"):
        train(config)
    assert not (tmp_path / "o" / "train_log.jsonl").exists()
