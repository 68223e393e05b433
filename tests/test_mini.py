"""The miniature SD: tiny settings train every stage, checkpoint, resume, and load with diffusers."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from controlnet.errors import InputError, MissingFileError
from controlnet.mini import MiniConfig, build_tokenizer, colour_check
from controlnet.mini import load as load_mini
from controlnet.mini.loop import run_stage
from controlnet.mini.models import build_vae
from controlnet.mini.vae_stage import vae_stage
from controlnet.world import World, vocabulary


def _cli(argv):
    from controlnet.cli import world

    parser = argparse.ArgumentParser(prog="controlnet")
    world.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mini")
    assert _cli(["world", "build-mini", str(out), "--tiny", "--threads", "1"]) == 0
    return out


def test_tokenizer_gives_every_world_word_one_token(tmp_path):
    tok = build_tokenizer(tmp_path / "tok", max_length=32)
    for word in vocabulary():
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a red circle on a blue background").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 9
    assert len(tok("Any other text, ünïcode too!").input_ids) > 3  # still tokenizes, byte by byte
    longest = max(len(tok(s.caption).input_ids) for s in World(seed=0).take(300))
    assert longest <= 32


def test_build_writes_a_diffusers_folder(built):
    model = built / "model"
    for part in ("model_index.json", "vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert (model / part).exists(), part
    report = json.loads((built / "report.json").read_text())
    assert set(report["stages"]) >= {"vae", "base", "save"}
    assert report["stages"]["vae"]["steps"] == 3 and report["stages"]["base"]["steps"] == 3
    vae_config = json.loads((model / "vae" / "config.json").read_text())
    assert vae_config["scaling_factor"] == pytest.approx(report["model"]["scaling_factor"])
    assert vae_config["latent_channels"] == 4 and len(vae_config["block_out_channels"]) == 4  # 8× down
    assert list((built / "base" / "samples").glob("step_*.png"))
    assert (built / "model_samples.png").exists()
    from safetensors import safe_open

    from controlnet.assets import available_controlnets, mini_controlnet_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.recommended import read as read_recommended

    assert available_controlnets(model) == ["edges", "seg", "depth", "inpaint"]  # stage 3, by `controlnet train`
    for condition in ("edges", "seg", "depth", "inpaint"):
        assert report["stages"][f"controlnet-{condition}"]["steps"] == 4
        load_controlnet(model / f"controlnet-{condition}")  # loads
        # the recipe's recommended sampling settings travel with a freshly built ControlNet
        assert read_recommended(model / f"controlnet-{condition}") == read_recommended(mini_controlnet_dir(condition))
        with safe_open(next((model / f"controlnet-{condition}").glob("*.safetensors")), "pt") as f:
            assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float16}  # fp16 on disk


@pytest.mark.filterwarnings("ignore:`torch_dtype` is deprecated")
def test_saved_model_loads_with_diffusers_offline_and_draws(built):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(built / "model", safety_checker=None, local_files_only=True,
                                                   torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red circle on a blue background", num_inference_steps=2, height=64, width=64,
               output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    weights = next((built / "model" / "unet").glob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(weights, "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16  # fp16 on disk


def test_rerun_resumes_without_retraining(built, capsys):
    before = (built / "vae" / "state.pt").stat().st_mtime_ns
    assert _cli(["world", "build-mini", str(built), "--tiny"]) == 0
    assert (built / "vae" / "state.pt").stat().st_mtime_ns == before
    with pytest.raises(InputError):  # other settings in the same folder
        _cli(["world", "build-mini", str(built), "--tiny", "--seed", "9"])


def test_interrupted_stage_resumes_to_the_same_weights(tmp_path):
    cfg = replace(MiniConfig.tiny(), vae=replace(MiniConfig.tiny().vae, max_steps=6))

    def make(folder):
        torch.manual_seed(0)
        stage = vae_stage(cfg, build_vae(cfg), folder, budget_s=3600)
        stage.checkpoint_every_s = 0.0  # checkpoint after every step
        return stage

    straight = make(tmp_path / "straight")
    assert run_stage(straight, progress=False)["steps"] == 6

    broken = make(tmp_path / "broken")
    step = broken.step

    def dies_at_step_4(i):
        if i == 4:
            raise KeyboardInterrupt
        return step(i)

    broken.step = dies_at_step_4
    with pytest.raises(KeyboardInterrupt):
        run_stage(broken, progress=False)
    assert not broken.done_path.exists() and broken.state_path.exists()
    resumed = make(tmp_path / "broken")
    assert run_stage(resumed, progress=False)["steps"] == 6
    for a, b in zip(straight.modules["vae"].parameters(), resumed.modules["vae"].parameters()):
        torch.testing.assert_close(a, b)


def test_colour_check_reads_the_world_pictures():
    samples = list(World(seed=3, min_shapes=1, max_shapes=1).take(20))
    assert all(colour_check(s.image, s.scene)["ok"] for s in samples)
    wrong = samples[1].image.copy()
    wrong[:] = (40, 160, 60) if samples[1].scene.background != "green" else (40, 70, 210)
    assert not colour_check(wrong, samples[1].scene)["ok"]


def test_missing_model_folder_is_a_user_error(tmp_path):
    with pytest.raises(MissingFileError):
        load_mini(tmp_path)
