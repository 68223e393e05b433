"""`controlnet train` as users run it: flags, SIGTERM, and two DDP processes under `accelerate launch`."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from controlnet.training import TrainConfig, make_fill50k, make_tiny_base, train
from ports import free_port
from test_train_loop import same_run

RES = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    return root, str(make_tiny_base(root / "base")), str(make_fill50k(root / "fill", n=16, size=32))


def module_args():
    from controlnet.cli import COMMANDS

    return ["-m", "controlnet", "train"] if "train" in COMMANDS else ["-m", "controlnet.cli.train"]


def flags(world, out, *extra):
    root, base, data = world
    return ["--base-model", base, "--data", data, "--output-dir", str(root / out), "--resolution", str(RES),
            "--learning-rate", "1e-3", "--report-to", "none", "--no-progress", *extra]


def env():
    return dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_parser_mirrors_the_config(world):
    from controlnet.cli.train import config_from_args, register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train", *flags(world, "x", "--batch-size", "2", "--gradient-checkpointing",
                                               "--empty-prompt-prob", "0.3", "--validation-images", "a.png", "b.png")])
    config = config_from_args(args)
    assert config.batch_size == 2 and config.gradient_checkpointing and config.empty_prompt_prob == 0.3
    assert config.validation_images == ["a.png", "b.png"] and config.learning_rate == 1e-3
    defaults = config_from_args(parser.parse_args(["train", "--base-model", "b", "--data", "d"]))
    assert defaults == TrainConfig(base_model="b", data=["d"])  # every default is the config's (paper's) default
    assert defaults.learning_rate == 1e-5 and defaults.empty_prompt_prob == 0.5
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "d"])  # --base-model is required


def test_user_errors_are_one_line(world, tmp_path, capsys):
    from controlnet.cli.train import main

    assert main(["--base-model", str(tmp_path), "--data", world[2]]) == 2
    err = capsys.readouterr().err
    assert "model_index.json" in err and err.count("\n") == 1


def test_sigterm_saves_and_resumes(world):
    out = world[0] / "sigterm"
    proc = subprocess.Popen([sys.executable, *module_args(), *flags(world, "sigterm", "--max-steps", "100000",
                                                                     "--checkpoint-every", "100000")],
                            env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = out / "train_log.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 2):
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "resume with --resume latest" in output
    stopped = json.loads(log.read_text().splitlines()[-1])["step"]
    ckpts = sorted((out / "checkpoints").iterdir())
    assert [p.name for p in ckpts] == [f"step-{stopped:06d}"]
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert state["step"] == stopped and state["samples_seen"] == 4 * stopped
    root, base, data = world
    result = train(TrainConfig(base_model=base, data=[data], output_dir=str(out), resolution=RES, learning_rate=1e-3,
                               report_to="none", progress=False, resume="latest", max_steps=stopped + 2))
    assert [r["step"] for r in result.log] == [stopped + 1, stopped + 2]


def test_two_cpu_processes_match_one(world):
    """DDP over gloo, 2 processes x batch 2 = 1 process x batch 4: the same samples, noise, time steps and
    prompt drops per global batch, so the same run up to float rounding (`same_run` says what that
    guarantees on any machine)."""
    steps = 4
    root, base, data = world
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           *module_args(), *flags(world, "ddp2", "--batch-size", "2", "--max-steps", str(steps))]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = [json.loads(ln) for ln in (root / "ddp2" / "train_log.jsonl").read_text().splitlines()]
    assert len(two) == steps
    one = train(TrainConfig(base_model=base, data=[data], output_dir=str(root / "ddp1"), resolution=RES,
                            learning_rate=1e-3, report_to="none", progress=False, batch_size=4, max_steps=steps))
    # it trained: every element moves by about lr per step under Adam
    assert max_diff(weights(root / "ddp1"), initial_weights(base)) > 0.5 * 1e-3
    same_run(one.log, root / "ddp1", two, root / "ddp2", lr=1e-3)  # the bounds and why they hold anywhere


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "diffusion_pytorch_model.safetensors"))


def max_diff(a, b):
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def initial_weights(base):
    from controlnet.nn import ControlNet
    from controlnet.training import load_base

    torch.manual_seed(0)  # the config's seed, as train() seeds the hint encoder's init
    return ControlNet.from_unet(load_base(base).unet, vae_scale_factor=2).state_dict()
