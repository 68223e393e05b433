"""Bad inputs to `controlnet world` (show, export, build-mini) and the world API: each gets one clear
line naming the input, exit code 2 (1 for a full disk), and leaves the user's files as they were.

Fast: a few world samples, never a training step (build-mini cases fail in validation, before the
first stage; a stage that starts anyway fails the test)."""

from __future__ import annotations

import json

import pytest

from bad_input_tools import assert_user_error, full_disk, needs_posix, read_only, run_cli, snapshot, unchanged
from controlnet.errors import InputError


@pytest.fixture
def finished_export(tmp_path, capsys):
    out = tmp_path / "data"
    assert run_cli(["world", "export", out, "--n", "2", "--layout", "imagefolder", "--seed", "3"], capsys)[0] == 0
    return out


# ---------------------------------------------------------------- world export

@pytest.mark.parametrize("options, fragments", [
    (["--start", "-1"], ["--start:", "start", "-1"]),
    (["--n", "0"], ["--n:", "n must", "got 0"]),
    (["--n", "-5"], ["--n:", "n must", "-5"]),
    (["--n", "many"], ["--n", "many"]),
    (["--condition", "nope"], ["--condition", "nope"]),
    (["--layout", "nope"], ["--layout", "nope"]),
    (["--size", "4"], ["size", "got 4"]),
    (["--size", "100000"], ["size", "100000"]),
    (["--min-shapes", "0"], ["min_shapes", "got 0"]),
    (["--max-shapes", "4"], ["max_shapes", "got 4"]),
    (["--min-shapes", "3", "--max-shapes", "2"], ["min_shapes", "max_shapes"]),
    (["--seed", "-1"], ["seed", "-1"]),
])
def test_export_refuses_bad_options_before_writing(tmp_path, capsys, options, fragments):
    with unchanged(tmp_path):
        assert_user_error(["world", "export", tmp_path / "out", "--n", "2", *options], capsys, *fragments)
    assert not (tmp_path / "out").exists()  # nothing created for a refused command


def test_export_onto_an_existing_file_keeps_it(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    with unchanged(tmp_path):
        assert_user_error(["world", "export", target, "--n", "2"], capsys, str(target), "is a file")


@pytest.mark.parametrize("options, fragments", [
    (["--layout", "imagefolder", "--seed", "3"], ["already holds this export"]),
    (["--layout", "fill50k", "--seed", "3"], ["other settings", "layout=imagefolder"]),
    (["--layout", "imagefolder", "--seed", "4"], ["other settings", "seed=3"]),
    (["--layout", "imagefolder", "--seed", "3", "--condition", "depth"], ["other settings", "condition=edges"]),
])
def test_export_never_mixes_with_an_earlier_export(finished_export, capsys, options, fragments):
    with unchanged(finished_export):
        assert_user_error(["world", "export", finished_export, "--n", "2", *options], capsys,
                          str(finished_export), *fragments)


@pytest.mark.parametrize("name", ["prompt.json", "metadata.jsonl", "truth.jsonl", "source/0.png", "images/1.png"])
def test_export_refuses_a_folder_holding_another_dataset(tmp_path, capsys, name):
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text("somebody's data\n")
    with unchanged(tmp_path):
        assert_user_error(["world", "export", tmp_path, "--n", "2"], capsys, name.split("/")[0], "empty folder")


@pytest.mark.parametrize("content", [b"\x89PNG\x00\xff", b"[1, 2]"])
def test_export_refuses_a_damaged_settings_file(tmp_path, capsys, content):
    (tmp_path / "world.json").write_bytes(content)
    with unchanged(tmp_path):
        assert_user_error(["world", "export", tmp_path, "--n", "2"], capsys, "world.json")


@needs_posix
def test_export_into_a_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "locked"
    with read_only(folder), unchanged(tmp_path):
        assert_user_error(["world", "export", folder, "--n", "2"], capsys, str(folder), "not writable")


def test_export_cut_by_a_full_disk_resumes_to_the_same_files(tmp_path, capsys):
    cut, straight = tmp_path / "cut", tmp_path / "straight"
    argv = ["world", "export", "--n", "6", "--layout", "fill50k", "--condition", "depth"]
    with full_disk(1500):  # the pictures fit, the truth file does not
        assert_user_error([*argv[:2], cut, *argv[2:]], capsys, "disk is full", code=1)
    assert not (cut / "prompt.json").exists() and not list(cut.glob(".*.tmp"))
    assert json.loads((cut / "world.json").read_text())["complete"] is False
    # another export is refused; the same one resumes
    assert_user_error([*argv[:2], cut, *argv[2:], "--seed", "1"], capsys, "other settings")
    assert run_cli([*argv[:2], cut, *argv[2:]], capsys)[0] == 0
    assert run_cli([*argv[:2], straight, *argv[2:]], capsys)[0] == 0
    assert snapshot(cut) == snapshot(straight)


def test_read_export_names_a_damaged_index_line(finished_export):
    from controlnet.world import read_export

    (finished_export / "metadata.jsonl").write_text('{"image": "images/0.png"}\n')
    with pytest.raises(InputError, match="metadata.jsonl line 1"):
        read_export(finished_export)


# ---------------------------------------------------------------- world show

@pytest.mark.parametrize("name, options, fragments", [
    ("grid.gif", [], ["grid.gif", "unknown image suffix"]),
    ("grid", [], ["grid", "unknown image suffix"]),
    ("grid.png", ["--scale", "0"], ["scale", "got 0"]),
    ("grid.png", ["--scale", "-2"], ["scale", "-2"]),
    ("grid.png", ["--n", "0"], ["--n:", "n must", "got 0"]),  # it named no flag (issue 19)
    ("grid.png", ["--scale", "0"], ["--scale:", "got 0"]),
    ("grid.png", ["--min-shapes", "0"], ["--min-shapes:", "got 0"]),
    ("grid.png", ["--n", "100000", "--size", "2048"], ["grid would be", "fewer samples"]),
    ("grid.png", ["--max-shapes", "9"], ["max_shapes", "got 9"]),
])
def test_show_refuses_bad_options_before_drawing(tmp_path, capsys, name, options, fragments):
    with unchanged(tmp_path):
        assert_user_error(["world", "show", tmp_path / name, "--n", "1", *options], capsys, *fragments)


def test_show_onto_a_folder(tmp_path, capsys):
    (tmp_path / "grid.png").mkdir()
    with unchanged(tmp_path):
        assert_user_error(["world", "show", tmp_path / "grid.png", "--n", "1"], capsys, "grid.png", "is a folder")


@needs_posix
def test_show_into_a_read_only_folder(tmp_path, capsys):
    folder = tmp_path / "locked"
    with read_only(folder), unchanged(tmp_path):
        assert_user_error(["world", "show", folder / "grid.png", "--n", "1"], capsys, str(folder), "not writable")


def test_show_on_a_full_disk_keeps_the_old_grid(tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert run_cli(["world", "show", grid, "--n", "1", "--scale", "1"], capsys)[0] == 0
    with unchanged(tmp_path), full_disk(4096):
        assert_user_error(["world", "show", grid, "--n", "3", "--scale", "2"], capsys, "disk is full", code=1)


# ---------------------------------------------------------------- world build-mini

@pytest.fixture
def no_stage_runs(monkeypatch):
    """Any stage starting fails the test: these inputs must be refused before training."""
    import controlnet.mini.build as build

    def started(*args, **kwargs):
        raise AssertionError("a build stage started")

    for name in ("build_tokenizer", "run_stage", "train_controlnet"):
        monkeypatch.setattr(build, name, started)


@pytest.mark.parametrize("options, fragments", [
    (["--budget-minutes", "0"], ["budget_minutes", "got 0"]),
    (["--budget-minutes", "-5"], ["budget_minutes", "-5"]),
    (["--budget-minutes", "nan"], ["budget_minutes", "finite"]),
    (["--budget-minutes", "inf"], ["budget_minutes", "finite"]),
    (["--threads", "0"], ["threads", "got 0"]),
    (["--threads", "-2"], ["threads", "-2"]),
    (["--seed", "-1"], ["seed", "-1"]),
    (["--budget-minutes", "soon"], ["--budget-minutes", "soon"]),
])
def test_build_mini_refuses_bad_options_before_any_stage(tmp_path, capsys, no_stage_runs, options, fragments):
    with unchanged(tmp_path):
        assert_user_error(["world", "build-mini", tmp_path / "build", "--tiny", *options], capsys, *fragments)
    assert not (tmp_path / "build").exists()


def test_build_mini_into_a_file(tmp_path, capsys, no_stage_runs):
    target = tmp_path / "build"
    target.write_text("mine")
    with unchanged(tmp_path):
        assert_user_error(["world", "build-mini", target, "--tiny"], capsys, str(target), "is a file")


@needs_posix
def test_build_mini_into_a_read_only_folder(tmp_path, capsys, no_stage_runs):
    folder = tmp_path / "locked"
    with read_only(folder), unchanged(tmp_path):
        assert_user_error(["world", "build-mini", folder, "--tiny"], capsys, str(folder), "not writable")


@pytest.mark.parametrize("recipe", ['{"image_size": 64', "[]", '{"vae": {"lr": 1}}', "\udcff"])
def test_build_mini_names_a_damaged_recipe(tmp_path, capsys, no_stage_runs, recipe):
    (tmp_path / "recipe.json").write_text(recipe, errors="surrogateescape")
    with unchanged(tmp_path):
        assert_user_error(["world", "build-mini", tmp_path, "--tiny"], capsys, "recipe.json", "not a readable")


def test_build_mini_refuses_other_settings_in_a_started_build(tmp_path, capsys, no_stage_runs):
    from controlnet.mini import MiniConfig

    MiniConfig.tiny().save(tmp_path / "recipe.json")
    with unchanged(tmp_path):
        assert_user_error(["world", "build-mini", tmp_path, "--tiny", "--seed", "9"], capsys, "other settings")


# ---------------------------------------------------------------- the API

@pytest.mark.parametrize("kwargs, fragment", [
    (dict(seed=-1), "seed"), (dict(size=7), "size"), (dict(size=64.0), "size"), (dict(min_shapes=0), "min_shapes"),
    (dict(max_shapes=4), "max_shapes"), (dict(textured=float("nan")), "textured"),
    (dict(conditions=("normals",)), "normals"),
])
def test_world_refuses_bad_settings(kwargs, fragment):
    from controlnet.world import World

    with pytest.raises(InputError, match=fragment):
        World(**kwargs)


def test_grid_of_nothing_is_refused():
    from controlnet.world import image_grid

    with pytest.raises(InputError, match="at least one image"):
        image_grid([])


def test_take_refuses_a_negative_start():
    from controlnet.world import World

    with pytest.raises(InputError, match="start"):
        next(World().take(2, start=-1))
