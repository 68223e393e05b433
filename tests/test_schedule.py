"""Strength schedules (issue 14.3): keyframes parsed and checked, the factor applied on the right
steps (equal to windowed units bit for bit), constant schedules equal today's result, the
`generate --schedule` option end to end with its PNG parameters, and bad inputs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from bad_input_tools import assert_user_error, unchanged
from controlnet.errors import InputError
from controlnet.pipeline import ControlPipeline, ControlUnit
from controlnet.pipeline.schedule import check_schedule, factor_at, format_schedule, parse_schedule
from tiny_models import random_hint, save_base_and_controlnet, start_latents, tiny_controlnet, tiny_pipeline

W, H = 64, 48


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_pipeline("sd1")
    return ControlPipeline.from_diffusers(pipe), tiny_controlnet(pipe, seed=1), random_hint(W, H, seed=1), start_latents(pipe, W, H)


def sample(sd1, units, steps=4, **kw):
    pipe, _, _, latents = sd1
    return pipe("a red cube", units, steps=steps, latents=latents, output_type="latent", progress=False, seed=0,
                width=W, height=H, **kw).images


def unit(sd1, **kw):
    _, cn, hint, _ = sd1
    return ControlUnit(cn, hint, **kw)


# ------------------------------------------------------------------------------------ keyframes


def test_parse_and_format():
    assert parse_schedule("0:1, 0.5:0.3") == [(0.0, 1.0), (0.5, 0.3)]
    assert check_schedule("0:1,1:0") == ((0.0, 1.0), (1.0, 0.0))
    assert format_schedule(check_schedule([(0, 1), (0.5, 0.3)])) == "0.0:1.0,0.5:0.3"
    assert check_schedule(format_schedule(((0.1, 1 / 3),))) == ((0.1, 1 / 3),)  # the text form is exact


def test_hold_linear_and_the_implicit_first_keyframe():
    s = check_schedule([(0.25, 0.0), (0.75, 0.5)])
    # before the first keyframe the factor is 1 (an implicit (0, 1)); after the last, the last holds
    assert [factor_at(s, f) for f in (0.0, 0.2, 0.25, 0.5, 0.75, 1.0)] == [1.0, 1.0, 0.0, 0.0, 0.5, 0.5]
    assert [factor_at(s, f, "linear") for f in (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)] == [1.0, 0.5, 0.0, 0.25, 0.5, 0.5]
    assert factor_at(None, 0.3) == 1.0


@pytest.mark.parametrize(
    "schedule, message",
    [
        ([], "non-empty list"),
        ("", "not FRACTION:FACTOR"),
        ("0:1;0.5:0.3", "not FRACTION:FACTOR"),
        ("0:1:2", "not FRACTION:FACTOR"),
        ("half:1", "not FRACTION:FACTOR"),
        (0.5, "non-empty list"),
        ([0.5], "(fraction, factor) pair"),
        ([("a", 1)], "two numbers"),
        ([(1.5, 1)], "outside [0, 1]"),
        ([(-0.1, 1)], "outside [0, 1]"),
        ([(0.5, 1), (0.2, 1)], "must increase"),
        ([(0.5, 1), (0.5, 2)], "must increase"),
        ([(0, -1)], ">= 0"),
        ([(0, float("nan"))], "finite"),
        ([(0, float("inf"))], "finite"),
    ],
)
def test_bad_schedules_are_refused_by_the_unit(sd1, schedule, message):
    with pytest.raises(InputError, match="schedule") as info:
        unit(sd1, schedule=schedule)
    assert message in str(info.value)


def test_bad_interpolation_is_refused(sd1):
    with pytest.raises(InputError, match="hold, linear"):
        unit(sd1, schedule=[(0, 1)], schedule_interpolation="cubic")


# ------------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("mode", ["balanced", "control"])
def test_constant_schedules_give_exactly_todays_result(sd1, mode):
    today = sample(sd1, [unit(sd1, weight=0.7, mode=mode)])
    for schedule, how in (([(0, 1)], "hold"), ([(0, 1), (1, 1)], "linear"), ([(0.0, 1.0), (0.5, 1.0)], "hold")):
        assert torch.equal(sample(sd1, [unit(sd1, weight=0.7, mode=mode, schedule=schedule, schedule_interpolation=how)]), today)
    assert not torch.equal(sample(sd1, []), today)  # the unit does act


def test_constant_factor_equals_that_weight(sd1):
    assert torch.equal(sample(sd1, [unit(sd1, schedule=[(0, 0.3)])]), sample(sd1, [unit(sd1, weight=0.3)]))


def test_hold_schedule_equals_windowed_units_and_changes_the_output(sd1):
    """weight 1 then 0.3 from half the steps on == a unit for [0, 0.5] plus a unit at 0.3 for [0.5, 1]."""
    scheduled = sample(sd1, [unit(sd1, schedule=[(0, 1), (0.5, 0.3)])])
    windows = sample(sd1, [unit(sd1, end=0.5), unit(sd1, weight=0.3, start=0.5)])
    assert torch.equal(scheduled, windows)
    assert not torch.equal(scheduled, sample(sd1, [unit(sd1)]))
    assert not torch.equal(scheduled, sample(sd1, [unit(sd1, weight=0.3)]))


def test_linear_schedule_is_the_ramp_at_each_step_start(sd1):
    """Linear 1 -> 0 over 4 steps: factors 1, 0.75, 0.5, 0.25 at fractions 0, 1/4, 2/4, 3/4."""
    ramp = sample(sd1, [unit(sd1, schedule=[(0, 1), (1, 0)], schedule_interpolation="linear")])
    steps = [unit(sd1, weight=1 - i / 4, start=i / 4, end=(i + 1) / 4) for i in range(4)]
    assert torch.equal(ramp, sample(sd1, steps))


def test_drop_to_zero_lines_up_with_start_and_end(sd1):
    """Step i of N has fraction i/N, the point `start` is compared with: a rise at f always equals
    start=f; a drop at f equals end=f when f·N is whole (else end asks the whole step to fit)."""
    assert torch.equal(sample(sd1, [unit(sd1, schedule=[(0, 1), (0.5, 0)])]), sample(sd1, [unit(sd1, end=0.5)]))
    rise = sample(sd1, [unit(sd1, schedule=[(0, 0), (0.5, 1)])], steps=5)
    assert torch.equal(rise, sample(sd1, [unit(sd1, start=0.5)], steps=5))
    drop = sample(sd1, [unit(sd1, schedule=[(0, 1), (0.5, 0)])], steps=5)  # step 2 spans 0.4-0.6: it runs
    assert torch.equal(drop, sample(sd1, [unit(sd1, end=0.6)], steps=5))
    assert not torch.equal(drop, sample(sd1, [unit(sd1, end=0.5)], steps=5))


def test_a_unit_at_factor_zero_is_not_run(sd1, monkeypatch):
    _, cn, _, _ = sd1
    calls = []
    forward = cn.forward
    monkeypatch.setattr(cn, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    sample(sd1, [unit(sd1, schedule=[(0, 1), (0.25, 0), (0.75, 1)])])
    assert len(calls) == 2  # steps 0 and 3 of 4
    calls.clear()
    sample(sd1, [unit(sd1, schedule=[(0, 0), (1, 0)], schedule_interpolation="linear")])
    assert calls == [] and unit(sd1, schedule=[(0, 0)]).off


# ------------------------------------------------------------------------------------ command line


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("schedule_cli")
    save_base_and_controlnet(d)
    random_hint(W, H, seed=1).save(d / "a.png")
    return d


def cli(files, out, *unit_options):
    from controlnet.cli import main

    d = files
    return main(["generate", "--model", str(d / "base"), "--prompt", "a house", "--steps", "4", "--seed", "3",
                 "--width", str(W), "--height", str(H), "--no-grid", "-o", str(out),
                 "--controlnet", str(d / "cn"), "--image", str(d / "a.png"), *unit_options])


def pixels(path):
    return np.asarray(Image.open(path))


def test_cli_schedule_end_to_end_with_png_parameters(files, tmp_path):
    assert cli(files, tmp_path / "s", "--schedule", "0:1,0.5:0") == 0
    assert cli(files, tmp_path / "e", "--end", "0.5") == 0
    assert cli(files, tmp_path / "plain") == 0
    picture = tmp_path / "s" / "00000-3.png"
    assert np.array_equal(pixels(picture), pixels(tmp_path / "e" / "00000-3.png"))
    assert not np.array_equal(pixels(picture), pixels(tmp_path / "plain" / "00000-3.png"))

    text = Image.open(picture).text
    stored = json.loads(text["controlnet"])["units"][0]
    assert (stored["schedule"], stored["schedule_interpolation"]) == ("0:1,0.5:0", "hold")
    assert "Strength schedule 0: \"0.0:1.0,0.5:0.0 (hold)\"" in text["parameters"]
    assert "schedule" not in Image.open(tmp_path / "plain" / "00000-3.png").text["parameters"]

    from controlnet.cli import main

    assert main(["generate", "--from", str(picture), "-o", str(tmp_path / "again"), "--no-grid"]) == 0
    assert np.array_equal(pixels(tmp_path / "again" / "00000-3.png"), pixels(picture))


def test_cli_linear_interpolation(files, tmp_path):
    assert cli(files, tmp_path / "hold", "--schedule", "0:1,1:0") == 0
    assert cli(files, tmp_path / "lin", "--schedule", "0:1,1:0", "--schedule-interpolation", "linear") == 0
    assert not np.array_equal(pixels(tmp_path / "hold" / "00000-3.png"), pixels(tmp_path / "lin" / "00000-3.png"))
    stored = json.loads(Image.open(tmp_path / "lin" / "00000-3.png").text["controlnet"])["units"][0]
    assert stored["schedule_interpolation"] == "linear"


@pytest.mark.parametrize(
    "options, fragments",
    [
        (["--schedule", "0:1,x"], ["schedule", "not FRACTION:FACTOR"]),
        (["--schedule", "0.5:1,0.2:1"], ["schedule", "must increase"]),
        (["--schedule", "0:1,0:2"], ["schedule", "must increase"]),
        (["--schedule", "0:-1"], ["schedule", ">= 0"]),
        (["--schedule", "0:nan"], ["schedule", "finite"]),
        (["--schedule", "1.5:1"], ["schedule", "outside [0, 1]"]),
        (["--schedule", ""], ["schedule", "not FRACTION:FACTOR"]),
        (["--schedule", "0:1", "--schedule-interpolation", "cubic"], ["schedule_interpolation", "hold, linear"]),
        (["--schedule", "0:1", "--schedule", "0:2"], ["--schedule given twice"]),
    ],
)
def test_cli_bad_schedules(files, tmp_path, capsys, options, fragments):
    d = files
    argv = ["generate", "--model", str(d / "base"), "--steps", "2", "-o", str(tmp_path / "out"),
            "--controlnet", str(d / "cn"), "--image", str(d / "a.png"), *options]
    with unchanged(d), unchanged(tmp_path):
        assert_user_error(argv, capsys, *fragments)


def test_cli_schedule_before_a_controlnet(files, tmp_path, capsys):
    assert_user_error(["generate", "--model", str(files / "base"), "--schedule", "0:1"], capsys, "give --controlnet FILE before")
