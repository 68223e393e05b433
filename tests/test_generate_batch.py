"""`controlnet generate` over folders (issue 14 part 4): one output per input named after it, skip
what is done, failures per file, unit folders paired by name, models loaded once, bad inputs."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, full_disk, needs_posix, read_only, run_cli, snapshot, unchanged
from controlnet.pipeline import ControlPipeline
from controlnet.pipeline.batch import pair_sources
from tiny_models import random_hint, save_base_and_controlnet

W, H = 32, 32


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("batch")
    save_base_and_controlnet(d)
    (d / "edges").mkdir()
    random_hint(W, H, seed=1).save(d / "edges" / "a.png")
    random_hint(W, H, seed=2).convert("RGB").save(d / "edges" / "b.jpg")
    (d / "edges" / "notes.txt").write_text("not a picture: ignored")
    (d / "depth").mkdir()
    random_hint(W, H, seed=3).save(d / "depth" / "a.png")
    random_hint(W, H, seed=4).save(d / "depth" / "b.png")
    return d


def generate(d, out, *units, extra=()):
    argv = ["generate", "--model", d / "base", "--prompt", "a house", "--steps", "2", "--seed", "7", "--width", W,
            "--height", H, "-o", out, *extra]
    for image in units:
        argv += ["--controlnet", d / "cn", "--image", image]
    return argv


@pytest.fixture
def loads(monkeypatch):
    """Counts base model and ControlNet loads."""
    import controlnet.checkpoints as checkpoints

    calls = {"base": 0, "controlnet": 0}
    base, net = ControlPipeline.from_pretrained.__func__, checkpoints.load_controlnet

    def spy_base(cls, *a, **k):
        calls["base"] += 1
        return base(cls, *a, **k)

    def spy_net(*a, **k):
        calls["controlnet"] += 1
        return net(*a, **k)

    monkeypatch.setattr(ControlPipeline, "from_pretrained", classmethod(spy_base))
    monkeypatch.setattr(checkpoints, "load_controlnet", spy_net)
    return calls


def test_one_output_per_input_named_after_it_and_equal_to_a_single_run(files, tmp_path, capsys, loads):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(generate(files, out, files / "edges"), capsys)
    assert code == 0 and "2 done, 0 skipped" in stdout and "0 failed" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    assert loads == {"base": 1, "controlnet": 1}  # loaded once for the whole batch
    stored = json.loads(Image.open(out / "b.png").text["controlnet"])
    assert stored["units"][0]["image"] == str(files / "edges" / "b.jpg") and stored["seed"] == 7

    single = tmp_path / "single"
    assert run_cli(generate(files, single, files / "edges" / "b.jpg", extra=["--no-grid"]), capsys)[0] == 0
    assert np.array_equal(np.asarray(Image.open(single / "00000-7.png")), np.asarray(Image.open(out / "b.png")))


def test_rerun_skips_finished_outputs(files, tmp_path, capsys, loads):
    out = tmp_path / "out"
    assert run_cli(generate(files, out, files / "edges"), capsys)[0] == 0
    before = snapshot(out)
    code, stdout, _ = run_cli(generate(files, out, files / "edges"), capsys)
    assert code == 0 and "0 done, 2 skipped" in stdout and snapshot(out) == before
    assert loads["base"] == 1  # nothing to do: no model loaded the second time
    (out / "a.png").unlink()
    code, stdout, _ = run_cli(generate(files, out, files / "edges"), capsys)
    assert code == 0 and "1 done, 1 skipped" in stdout
    assert snapshot(out) == before  # a.png again, the same picture; b.png untouched


def test_a_damaged_picture_is_reported_and_the_batch_goes_on(files, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    random_hint(W, H, seed=1).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    out = tmp_path / "out"
    code, stdout, err = run_cli(generate(files, out, folder), capsys)
    assert code == 1 and "1 done, 0 skipped" in stdout and "1 failed" in stdout
    assert "broken.png" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["good.png"]


def test_unit_folders_pair_by_name_and_a_single_image_serves_every_output(files, tmp_path, capsys):
    out = tmp_path / "out"
    hint = tmp_path / "fixed.png"
    random_hint(W, H, seed=9).save(hint)
    code, stdout, _ = run_cli(generate(files, out, files / "edges", files / "depth", hint), capsys)
    assert code == 0 and "2 done" in stdout
    stored = json.loads(Image.open(out / "a.png").text["controlnet"])
    assert [u["image"] for u in stored["units"]] == [str(files / "edges" / "a.png"), str(files / "depth" / "a.png"), str(hint)]


def test_pairing_lists_items_in_name_order(files, tmp_path):
    items = pair_sources([files / "depth", files / "edges"], ["one", "two"])
    assert [(i.name, [p.name for p in i.images]) for i in items] == [("a", ["a.png", "a.png"]), ("b", ["b.png", "b.jpg"])]
    assert [p.name for p in items[1].outputs(tmp_path, num_images=2)] == ["b-0.png", "b-1.png"]
    (tmp_path / "b-0.png").write_bytes(b"")
    assert not items[1].done(tmp_path, 2) and items[1].done(tmp_path, 1) is False
    (tmp_path / "b-1.png").write_bytes(b"")
    assert items[1].done(tmp_path, 2)


@needs_posix
def test_full_disk_fails_each_picture_and_leaves_no_partial_file(files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    with full_disk(1024):
        code, stdout, err = run_cli(generate(files, out, files / "edges"), capsys)
    assert code == 1 and "0 done" in stdout and "2 failed" in stdout and "disk is full" in err and "Traceback" not in err
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------- bad inputs


def test_unmatched_names_are_named(files, tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    for name in ("a", "c", "d"):
        random_hint(W, H).save(other / f"{name}.png")
    with unchanged(tmp_path):
        assert_user_error(generate(files, tmp_path / "out", files / "edges", other), capsys,
                          "do not pair up", f"{files / 'edges'} lacks c, d", f"{other} lacks b")


@pytest.mark.parametrize("content, fragments", [({}, ["is empty"]), ({"notes.txt": "x", "sub/a.png": None}, ["has no images",
                                                                                                             "notes.txt"])])
def test_empty_folder_or_one_without_images(files, tmp_path, capsys, content, fragments):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).parent.mkdir(exist_ok=True)
        if text is None:
            random_hint(W, H).save(folder / name)
        else:
            (folder / name).write_text(text)
    with unchanged(tmp_path):
        assert_user_error(generate(files, tmp_path / "out", folder), capsys, str(folder), *fragments)


def test_output_that_is_a_file(files, tmp_path, capsys):
    target = tmp_path / "out.png"
    target.write_text("the user's file")
    with unchanged(tmp_path):
        assert_user_error(generate(files, target, files / "edges"), capsys, "is a file")


@needs_posix
def test_read_only_output(files, tmp_path, capsys, loads):
    locked = tmp_path / "locked"
    with read_only(locked), unchanged(locked):
        assert_user_error(generate(files, locked, files / "edges"), capsys, "locked", "not writable")
    assert loads == {"base": 0, "controlnet": 0}


@pytest.mark.parametrize("where", ["the input folder", "inside it"])
def test_output_among_the_inputs_is_refused(files, tmp_path, capsys, loads, where):
    """-o the input folder reported "0 done, 2 skipped (already there)": the inputs were taken for outputs."""
    inputs = tmp_path / "in"
    shutil.copytree(files / "edges", inputs)
    out = inputs if where == "the input folder" else inputs / "results"
    with unchanged(tmp_path):
        assert_user_error(generate(files, out, inputs), capsys, "output folder (-o)",
                          "is unit 1's --image folder" if out == inputs else "is inside unit 1's --image folder")
    assert loads == {"base": 0, "controlnet": 0}
