"""The miniature Flux-shaped base (mini-dit): the recipe's smoke test, resume, the folder sharing
mini's autoencoder and text encoder, the built-in names, and `evaluate` on a transformer base."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bad_input_tools import assert_user_error, run_cli, unchanged
from controlnet.assets import MINI_DIR
from controlnet.errors import CheckpointError, MissingFileError
from controlnet.mini.dit_config import MiniDiTConfig


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from controlnet.cli import main

    out = tmp_path_factory.mktemp("minidit")
    assert main(["world", "build-mini-dit", str(out), "--tiny", "--threads", "1"]) == 0
    return out


def test_recipe_trains_both_stages_into_a_flux_folder_that_shares_mini(built):
    from controlnet.checkpoints import load_controlnet
    from controlnet.nn.dit_controlnet import FluxControlNet
    from controlnet.pipeline.flux import FluxBase

    model = built / "model"
    report = json.loads((built / "report.json").read_text())
    assert report["stages"]["base"]["steps"] == 3 and report["stages"]["controlnet-edges"]["steps"] == 3
    assert sorted(p.name for p in model.iterdir()) == ["controlnet-edges", "model_index.json", "scheduler", "transformer"]
    base = FluxBase.from_pretrained(model, dtype=torch.float32)
    mini_vae = json.loads((MINI_DIR / "vae" / "config.json").read_text())
    assert base.vae.config.scaling_factor == mini_vae["scaling_factor"]  # mini's own autoencoder, not a copy
    assert base.text_encoder_2 is None and base.transformer.config.joint_attention_dim == 96
    net = load_controlnet(model / "controlnet-edges")
    assert isinstance(net, FluxControlNet) and net.index_rule == "xlabs"  # a pixel hint encoder
    assert net.inner_dim == base.transformer.inner_dim
    tiny = MiniDiTConfig.tiny()  # the recipe's hint encoder, not XLabs' 16s, and a single block
    assert net.config.num_single_layers == tiny.controlnet_single_blocks == 1
    assert tuple(net.config.hint_widths) == tiny.controlnet_hint_widths
    assert net.config.conditioning_embedding_channels == tiny.controlnet_hint_channels
    shared = json.loads((model / "model_index.json").read_text())["_shared_components"]
    assert shared["vae"] == "builtin:mini/vae" and shared["tokenizer"] == "builtin:mini/tokenizer"
    assert list((built / "base" / "samples").glob("step_*.png"))
    assert "edge F1" in (built / "controlnets" / "edges" / "samples" / "fidelity.txt").read_text()


def test_a_finished_build_is_not_trained_again(built, monkeypatch):
    import controlnet.mini.dit_build as build
    import controlnet.mini.loop as loop

    before = (built / "controlnets" / "edges" / "state.pt").stat().st_mtime_ns
    monkeypatch.setattr(loop, "_train_step", lambda *a: (_ for _ in ()).throw(AssertionError("trained again")))
    build.build_mini_dit(built, MiniDiTConfig.tiny(), progress=False, log=lambda *_: None)  # its recipe.json reads back equal
    assert (built / "controlnets" / "edges" / "state.pt").stat().st_mtime_ns == before


def test_retraining_only_the_controlnet_on_a_finished_base_equals_the_whole_build(built, tmp_path):
    """How the shipped mini-dit:edges was made (docs/mini.md): the base stage kept, the ControlNet stage
    run again. Every random draw of the recipe comes from step-seeded generators, so the result is the
    from-scratch build's, tensor for tensor."""
    import shutil

    from safetensors.torch import load_file

    import controlnet.mini.dit_build as build

    again = tmp_path / "again"
    shutil.copytree(built, again)
    shutil.rmtree(again / "controlnets")
    shutil.rmtree(again / "model" / "controlnet-edges")
    build.build_mini_dit(again, MiniDiTConfig.tiny(), progress=False, log=lambda *_: None)
    first, second = (load_file(next((b / "model" / "controlnet-edges").glob("*.safetensors"))) for b in (built, again))
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_built_model_is_sampled_with_and_without_its_controlnet(built):
    from controlnet.checkpoints import load_controlnet
    from controlnet.pipeline.flux import FluxBase, FluxControl

    base = FluxBase.from_pretrained(built / "model", dtype=torch.float32)
    net = load_controlnet(built / "model" / "controlnet-edges", dtype=torch.float32)
    hint = torch.zeros(1, 3, 64, 64)
    hint[..., 20, :] = 1
    kwargs = dict(negative_prompt="", true_cfg_scale=3.0, width=64, height=64, steps=2, output_type="np")
    plain = base("a red circle", generator=torch.Generator().manual_seed(0), **kwargs)
    controlled = base("a red circle", [FluxControl(net, hint)], generator=torch.Generator().manual_seed(0), **kwargs)
    assert plain.shape == controlled.shape == (1, 64, 64, 3) and np.isfinite(controlled).all()


def test_a_folder_sharing_another_mini_moves_with_it(tmp_path):
    """Outside the built-in models the shared parts are found by a relative path: the pair moves together."""
    import shutil

    from controlnet.mini import dit_pipeline
    from controlnet.mini.dit_models import build_scheduler, build_transformer
    from controlnet.pipeline.flux import FluxBase

    for part in ("vae", "text_encoder", "tokenizer"):
        shutil.copytree(MINI_DIR / part, tmp_path / "a" / "mini" / part)
    dit_pipeline.save(build_transformer(MiniDiTConfig.tiny()), build_scheduler(), tmp_path / "a" / "dit", tmp_path / "a" / "mini")
    (tmp_path / "a").rename(tmp_path / "b")
    base = FluxBase.from_pretrained(tmp_path / "b" / "dit", dtype=torch.float32)
    assert base.vae.config.latent_channels == 4 and base.tokenizer.model_max_length == 32


def test_shared_components_must_name_folders(tmp_path):
    from controlnet.mini.dit_pipeline import CLASSES
    from controlnet.pipeline.loading import load_folder

    index = {"_class_name": "FluxPipeline", **CLASSES, "_shared_components": ["vae"]}
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="_shared_components"):
        load_folder(tmp_path)


@pytest.mark.parametrize("options, fragments", [
    (["--budget-minutes", "0"], ["budget_minutes", "got 0"]),
    (["--threads", "0"], ["threads", "got 0"]),
    (["--seed", "-1"], ["seed", "-1"]),
])
def test_build_mini_dit_refuses_bad_options_before_any_stage(tmp_path, capsys, options, fragments):
    with unchanged(tmp_path):
        assert_user_error(["world", "build-mini-dit", tmp_path / "build", "--tiny", *options], capsys, *fragments)
    assert not (tmp_path / "build").exists()


def test_build_mini_dit_refuses_another_recipe_in_a_started_build(tmp_path, capsys):
    (tmp_path / "recipe.json").write_text("{}")
    with unchanged(tmp_path):
        assert_user_error(["world", "build-mini-dit", tmp_path, "--tiny"], capsys, "recipe.json", "not a readable")


# ---------------------------------------------------------------- evaluate on a transformer base

@pytest.fixture(scope="module")
def tiny_dit(tmp_path_factory):
    """A random tiny mini-dit-shaped base and an XLabs-style ControlNet whose outputs are not zero."""
    from controlnet.checkpoints.dit import save_dit_controlnet
    from controlnet.mini import dit_pipeline
    from controlnet.mini.dit_models import build_scheduler, build_transformer, controlnet_from_transformer

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tinydit")
    transformer = build_transformer(MiniDiTConfig.tiny())
    dit_pipeline.save(transformer, build_scheduler(), folder / "model", MINI_DIR)
    net = controlnet_from_transformer(transformer, MiniDiTConfig.tiny())
    with torch.no_grad():
        for p in [*net.controlnet_blocks.parameters(), *net.input_hint_block.conv_out.parameters()]:
            p.normal_(0, 0.5)
    save_dit_controlnet(net, folder / "model" / "controlnet-edges", dtype=torch.float32)
    return folder


def test_evaluate_scores_a_transformer_base_and_its_controlnet(tiny_dit, tmp_path):
    from controlnet.evaluation import evaluate

    result = evaluate(tiny_dit / "model", [f"edges={tiny_dit / 'model' / 'controlnet-edges'}"], "world:edges", tmp_path / "eval", n=2, steps=2,
                      guidance_scale=2.0, fid=False, progress=False)
    f1 = {r["row"]: r["value"] for r in result["records"] if r["metric"] == "edge_f1"}
    assert set(f1) == {"no control", f"edges={tiny_dit / 'model' / 'controlnet-edges'}"}
    assert result["settings"]["scheduler"] == "euler"
    cached = sorted((tmp_path / "eval" / "cache").glob("*/0.png"))
    assert len(cached) == 2 and cached[0].read_bytes() != cached[1].read_bytes()  # the ControlNet changed the picture
    assert (tmp_path / "eval" / "metrics.md").is_file()


def test_evaluate_refuses_a_unet_sampler_on_a_transformer_base(tiny_dit, tmp_path, capsys):
    assert_user_error(["evaluate", "--model", tiny_dit / "model", "--controlnet", f"edges={tiny_dit / 'model' / 'controlnet-edges'}",
                       "--data", "world:edges", "--n", "2", "--scheduler", "ddim", "--no-fid", "-o", tmp_path / "e"],
                      capsys, "--scheduler ddim", "Euler")


@pytest.mark.parametrize("extra, words", [(["--control-reuse", "2"], ["control_reuse", "U-Net bases"]),
                                          (["--compile"], ["--compile", "transformer base"])])
def test_evaluate_refuses_u_net_speed_options_on_a_transformer_base(tiny_dit, tmp_path, capsys, extra, words):
    assert_user_error(["evaluate", "--model", tiny_dit / "model", "--controlnet", f"edges={tiny_dit / 'model' / 'controlnet-edges'}",
                       "--data", "world:edges", "--n", "2", "--steps", "2", "--no-fid", "-o", tmp_path / "e", *extra],
                      capsys, *words)


def test_demo_takes_a_transformer_base(tiny_dit, tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "demo.png"
    code, stdout, _ = run_cli(["demo", "--base", tiny_dit / "model", "-o", out, "--steps", "2", "--samples", "2",
                               "--quiet"], capsys)
    assert code == 0 and "rows: edges" in stdout
    grid = np.asarray(Image.open(out).convert("RGB"))
    assert grid.shape[0] > grid.shape[1] / 4  # two rows of four pictures


def test_generate_reads_cfg_as_true_cfg_on_a_base_without_embedded_guidance(tiny_dit, tmp_path, capsys):
    """mini-dit has no guidance embedding: --cfg must still guide (true CFG against the empty prompt)."""
    from PIL import Image

    pictures = []
    for cfg in ("1", "4"):
        code, out, err = run_cli(["generate", "--model", tiny_dit / "model", "--prompt", "a red circle", "--cfg", cfg,
                                  "--steps", "2", "--width", "64", "--height", "64", "-o", tmp_path / cfg, "--no-grid"],
                                 capsys)
        assert code == 0, err
        pictures.append(np.asarray(Image.open(out.strip().splitlines()[-1]).convert("RGB")).astype(int))
    assert np.abs(pictures[0] - pictures[1]).mean() > 1


# ---------------------------------------------------------------- the built-in names

def test_builtin_names_resolve_to_the_mini_dit_folders():
    from controlnet.assets import MINI_DIT_DIR, resolve_controlnet, resolve_model

    assert resolve_model("mini-dit") == MINI_DIT_DIR
    assert resolve_controlnet("mini-dit:edges") == MINI_DIT_DIR / "controlnet-edges"
    with pytest.raises(MissingFileError, match="mini-dit:edges"):
        resolve_controlnet("mini-dit:seg")
    with pytest.raises(MissingFileError, match="--model mini-dit"):
        resolve_model("mini-dit:edges")
    assert resolve_controlnet("mini:edges") == MINI_DIR / "controlnet-edges"  # the U-Net names are unchanged


def test_shipped_mini_dit_edges_really_controls():
    """On held-out world samples the shipped edges ControlNet puts the picture's edges on the map's
    outlines: 1-px edge F1 far above the same base's without control (measured 0.56 vs 0.17 on these six,
    every controlled picture above every uncontrolled one; docs/mini.md has n = 64)."""
    from controlnet.assets import HELD_OUT_SEED, resolve_controlnet, resolve_model
    from controlnet.checkpoints import load_controlnet
    from controlnet.metrics.edges import edge_f1
    from controlnet.metrics.fidelity import reextract
    from controlnet.pipeline.dit_batch import load_dit_pipe
    from controlnet.recommended import read
    from controlnet.world import World

    pipe = load_dit_pipe(resolve_model("mini-dit"))
    net = load_controlnet(resolve_controlnet("mini-dit:edges"), dtype=torch.float32)
    settings = read(resolve_controlnet("mini-dit:edges"))
    samples = list(World(seed=HELD_OUT_SEED, size=64, conditions=("edges",)).take(6))
    prompts, maps = [s.caption for s in samples], [s.conditions["edges"] for s in samples]
    common = dict(steps=10, guidance_scale=settings["guidance_scale"], scheduler="euler", seed=0)
    plain = pipe(prompts, **common).images
    controlled = pipe(prompts, units=[pipe.make_unit(net, maps, weight=settings["weight"])], **common).images

    def f1(images):
        return np.mean([edge_f1(reextract("canny", (im * 255).round().astype(np.uint8)), m, tolerance=1)
                        for im, m in zip(images, maps)])

    controlled_f1, plain_f1 = f1(controlled), f1(plain)
    assert controlled_f1 > plain_f1 + 0.15 and controlled_f1 > 2 * plain_f1
