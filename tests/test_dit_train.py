"""`controlnet train` with an SD3 or Flux base (issue 21 §3): the trainer's step equals the step of
diffusers' `train_controlnet_sd3.py` / `train_controlnet_flux.py` on its own batch (loss and gradients
≤ 1e-5, from the pixels and prompts on), a run saves a ControlNet that loads and samples, a run killed
after a checkpoint and resumed ends with the weights of the uninterrupted one, the feature cache
changes nothing, and bad input is one line. Tiny random bases (tests/dit_bases.py), a few steps."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import FluxControlNetModel as DiffusersFluxControlNet
from diffusers import FluxPipeline, SD3ControlNetModel, StableDiffusion3Pipeline
from safetensors.torch import load_file

from bad_input_tools import assert_user_error, run_cli
from controlnet.training import TrainConfig, make_fill50k, make_tiny_base, train
from dit_bases import save_flux_base, save_sd3_base
from test_flow_matching_train import _assert_same_step, flux_reference, sd3_reference
from test_train_cli import env, module_args
from test_train_loop import same_run

RES = {"flux": 64, "sd3": 8}  # the tiny Flux VAE scales by 8 (then 2×2 packing), the SD3 one by 1


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("dit-train")
    save_flux_base(root / "flux")
    save_flux_base(root / "flux-1clip", t5=False)
    save_sd3_base(root / "sd3")
    for kind, size in RES.items():
        make_fill50k(root / f"fill-{kind}", n=8, size=size)
    return root


def config(world, kind, out, base=None, **kw):
    defaults = dict(base_model=str(world / (base or kind)), data=[str(world / f"fill-{kind}")],
                    output_dir=str(world / out), resolution=RES[kind], batch_size=2, learning_rate=1e-3, max_steps=4,
                    checkpoint_every=1000, report_to="none", progress=False, seed=0)
    defaults.update(kw)
    return TrainConfig(**defaults)


def weights(folder):
    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ---------------------------------------------------------------- the step equals diffusers' examples


def _example_inputs(run, batch, draws):
    """What the example scripts compute before their step, with their random draws fixed to ours: the VAE
    sample `mean + std·ε` shifted and scaled, prompts emptied where drawn, embeddings by diffusers' pipeline."""
    from controlnet.training.step import drop_prompts

    vae, base = run.base.vae, run.base
    prompts = drop_prompts(batch["prompt"], draws.drop_prompt)

    def latents(pixels, eps):
        dist = vae.encode(pixels).latent_dist
        return (dist.mean + dist.std * eps - vae.config.shift_factor) * vae.config.scaling_factor

    inputs = dict(latents=latents(batch["image"], draws.posterior),
                  control_latents=latents(batch["hint"] * 2 - 1, draws.hint_posterior), noise=draws.noise)
    with torch.no_grad():
        if run.recipe.kind == "sd3":
            pipe = StableDiffusion3Pipeline(**{k: getattr(base, k) for k in (
                "transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "text_encoder_3", "tokenizer",
                "tokenizer_2", "tokenizer_3")})
            embeds, _, pooled, _ = pipe.encode_prompt(prompts, prompts, prompts, do_classifier_free_guidance=False,
                                                      max_sequence_length=77)
        else:
            pipe = FluxPipeline(**{k: getattr(base, k) for k in (
                "transformer", "vae", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2")})
            embeds, pooled, _ = pipe.encode_prompt(prompts, prompts, max_sequence_length=512)
    return dict(inputs, prompt_embeds=embeds, pooled_prompt_embeds=pooled)


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_the_trainers_step_equals_the_diffusers_example(world, kind):
    """One micro-batch of `controlnet train` (data, draws, encoding, ControlNet copy, loss) against the
    examples' step on the same batch: their ControlNet class with our initial weights, the timesteps of
    our σ in their scheduler."""
    from controlnet.training import loop

    run = loop._setup(config(world, kind, f"step-{kind}"), None)
    batch = next(run.batches)
    reference_cls = SD3ControlNetModel if kind == "sd3" else DiffusersFluxControlNet
    ref_net = reference_cls.from_config({k: v for k, v in run.controlnet.config.items() if k != "hint_transform"})
    ref_net.load_state_dict(run.controlnet.state_dict(), strict=True)
    ref_net.train()

    draws = run.recipe.draw(run)
    features, _ = run.recipe.features(run, batch, draws)
    loss = run.recipe.loss(run, batch, draws, features)
    loss.backward()

    schedule = run.recipe.schedule
    timesteps = schedule.timesteps[[(schedule.sigmas == s).nonzero()[0].item() for s in draws.sigmas]]
    example = _example_inputs(run, batch, draws)
    if kind == "sd3":
        ref_loss, sigmas = sd3_reference(run.base.transformer, ref_net, example, schedule, "logit_normal", True,
                                         timesteps=timesteps)
    else:
        ref_loss, sigmas = flux_reference(run.base.transformer, ref_net, example, schedule, 3.5, timesteps=timesteps)
    assert torch.equal(sigmas, draws.sigmas)
    ref_loss.backward()
    _assert_same_step(ref_loss, ref_net, loss, run.controlnet, run.base.transformer)


# ---------------------------------------------------------------- runs


def test_flux_run_resumes_exactly_and_saves_a_controlnet_that_samples(world, capsys):
    """Killed after the checkpoint of step 2, resumed: the weights and losses of the uninterrupted run."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.nn.dit_controlnet import FluxControlNet

    full = train(config(world, "flux", "flux-full", checkpoint_every=2, keep_checkpoints=5))
    killed = world / "flux-killed"
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.output_dir / "checkpoints" / "step-000002", killed / "checkpoints" / "step-000002")
    resumed = train(config(world, "flux", "flux-killed", resume="latest", checkpoint_every=2))
    assert [r["step"] for r in resumed.log] == [3, 4]
    assert max_diff(weights(full.output_dir), weights(resumed.output_dir)) <= 1e-6
    losses = {r["step"]: r["loss"] for r in full.log}
    assert all(r["loss"] == pytest.approx(losses[r["step"]], abs=1e-6) for r in resumed.log)

    trained = load_controlnet(full.output_dir)
    assert isinstance(trained, FluxControlNet)
    assert (len(trained.transformer_blocks), len(trained.single_transformer_blocks)) == (2, 3)  # 4/10, capped
    assert max_diff(trained.state_dict(), weights(full.output_dir)) == 0
    assert trained.controlnet_x_embedder.weight.abs().max() > 0  # the zero input projection learnt
    code, out, err = run_cli(["generate", "--model", world / "flux", "--controlnet", full.output_dir, "--image",
                              world / "fill-flux" / "source" / "0.png", "--prompt", "a red cube", "--steps", "2",
                              "-o", world / "flux-out", "--no-grid"], capsys)
    assert code == 0, err


def test_xlabs_run_feeds_pixels_learns_resumes_and_saves_a_controlnet_that_generates(world, capsys):
    """`--controlnet-layout xlabs`: the base's double blocks copied behind a pixel hint encoder, the hint fed
    as pixels in [-1, 1] (no VAE), the zero layers learn; killed after step 1 and resumed, the weights of
    the uninterrupted run (the InstantX path's guarantees); saved, `generate` loads it back."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.checkpoints.dit import dit_layout_of, save_dit_controlnet
    from controlnet.training import loop

    run = loop._setup(config(world, "flux", "xlabs-step", controlnet_layout="xlabs"), None)
    assert run.controlnet.family == "flux-controlnet-xlabs" and not run.controlnet.controlnet_blocks[0].weight.any()
    batch, _, features = _one_batch(run)
    assert torch.equal(features["control_latents"], batch["hint"] * 2 - 1)  # pixels, not a VAE latent

    full = train(config(world, "flux", "xlabs-full", controlnet_layout="xlabs", max_steps=2, checkpoint_every=1))
    killed = world / "xlabs-killed"
    shutil.copytree(full.output_dir / "checkpoints" / "step-000001", killed / "checkpoints" / "step-000001")
    resumed = train(config(world, "flux", "xlabs-killed", controlnet_layout="xlabs", resume="latest", max_steps=2,
                           checkpoint_every=1))
    assert [r["step"] for r in resumed.log] == [2]
    assert max_diff(weights(full.output_dir), weights(resumed.output_dir)) <= 1e-6

    trained = load_controlnet(full.output_dir)
    assert trained.family == "flux-controlnet-xlabs" and trained.index_rule == "xlabs"
    assert (len(trained.transformer_blocks), len(trained.single_transformer_blocks)) == (2, 0)  # x-flux's depth 2
    assert max_diff(trained.state_dict(), weights(full.output_dir)) == 0
    assert all(block.weight.abs().max() > 0 for block in trained.controlnet_blocks)  # the zero layers learnt
    assert trained.input_hint_block.conv_out.weight.abs().max() > 0
    save_dit_controlnet(trained, world / "xlabs-original.safetensors", layout="original")
    assert dit_layout_of(world / "xlabs-original.safetensors") == "xlabs-original"  # x-flux's own keys
    assert max_diff(load_controlnet(world / "xlabs-original.safetensors").state_dict(), trained.state_dict()) == 0
    code, out, err = run_cli(["generate", "--model", world / "flux", "--controlnet", full.output_dir, "--image",
                              world / "fill-flux" / "source" / "0.png", "--prompt", "a red cube", "--steps", "2",
                              "-o", world / "xlabs-out", "--no-grid"], capsys)
    assert code == 0, err
    more = train(config(world, "flux", "xlabs-more", controlnet=str(full.output_dir), max_steps=1))
    assert load_controlnet(more.output_dir).family == "flux-controlnet-xlabs"  # --controlnet brings its layout


def test_sd3_cache_changes_nothing_and_validation_samples(world):
    """Cold and warm feature caches give the uncached run; validation grids come from `sample_sd3`."""
    hint = str(world / "fill-sd3" / "source" / "0.png")
    plain = train(config(world, "sd3", "sd3-plain", max_steps=2, num_layers=2, validation_images=[hint],
                         validation_prompts=["a red cube"], validation_steps=2, num_validation_samples=1))
    cache = str(world / "sd3-cache")
    cold = train(config(world, "sd3", "sd3-cold", max_steps=2, num_layers=2, cache_dir=cache))
    warm = train(config(world, "sd3", "sd3-warm", max_steps=2, num_layers=2, cache_dir=cache))
    for other in (cold, warm):
        assert max_diff(weights(plain.output_dir), weights(other.output_dir)) <= 1e-6
        assert [r["loss"] for r in other.log] == pytest.approx([r["loss"] for r in plain.log], abs=1e-6)
    assert len(list((world / "sd3-cache" / "latents").rglob("*.safetensors"))) == 8  # 2 steps × 2: targets, hints
    assert len(list((world / "sd3-cache" / "text").rglob("*.safetensors"))) >= 2

    from PIL import Image

    grid = np.asarray(Image.open(plain.output_dir / "validation" / "step-000002.png"))
    assert grid.shape == (RES["sd3"], 3 * RES["sd3"], 3)  # condition | with prompt | without
    assert grid[:, RES["sd3"]:].std() > 0


def test_one_clip_bases_train(world):
    """No T5 (the miniature bases' layout): Flux reads the CLIP's token states; SD3 with one CLIP gets its
    states and zeros in T5's place. The run's text embeddings are what the base's sampler encodes."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.pipeline.flux import FluxBase
    from controlnet.pipeline.sd3 import SD3Base
    from controlnet.training import loop

    save_sd3_base(world / "sd3-1clip", t5=False, clips=1, pooled_projection_dim=32)
    result = train(config(world, "flux", "flux-1clip-out", base="flux-1clip", max_steps=2, num_layers=1,
                          num_single_layers=0))
    net = load_controlnet(result.output_dir)
    assert (len(net.transformer_blocks), len(net.single_transformer_blocks)) == (1, 0)
    assert all(np.isfinite(r["loss"]) for r in result.log)
    for kind, base_cls in (("flux", FluxBase), ("sd3", SD3Base)):
        run = loop._setup(config(world, kind, f"{kind}-1clip-step", base=f"{kind}-1clip", num_layers=1), None)
        base = base_cls.from_pretrained(world / f"{kind}-1clip")
        assert base.text_encoder_2 is None and getattr(base, "text_encoder_3", None) is None
        embeds, pooled = run.recipe.encode(run.base)(["a red cube", ""])
        clip = base.text_encoder(base.tokenizer(["a red cube", ""], padding="max_length", return_tensors="pt").input_ids,
                                 output_hidden_states=True)
        if kind == "flux":
            assert torch.equal(embeds, clip.last_hidden_state) and torch.equal(pooled, clip.pooler_output)
        else:
            assert embeds.shape == (2, 77 + 77, 32) and torch.equal(embeds[:, :77], clip.hidden_states[-2])
            assert not embeds[:, 77:].any() and torch.equal(pooled, clip.text_embeds)
        assert np.isfinite(run.recipe.loss(run, *_one_batch(run)).item())


def _one_batch(run):
    batch = next(run.batches)
    draws = run.recipe.draw(run)
    return batch, draws, run.recipe.features(run, batch, draws)[0]


# ---------------------------------------------------------------- bad input


def _argv(world, kind, out, *extra, base=None):
    return ["train", "--base-model", world / (base or kind), "--data", world / f"fill-{kind}", "--output-dir",
            world / out, "--resolution", RES[kind], "--report-to", "none", "--no-progress", "--max-steps", "1", *extra]


@pytest.fixture(scope="module")
def nets(world):
    """ControlNet files: a Flux net, an SD3 net of another width, a U-Net net."""
    from controlnet.checkpoints import save_controlnet
    from controlnet.checkpoints.dit import save_dit_controlnet
    from controlnet.nn import ControlNet
    from controlnet.nn.dit_controlnet import FluxControlNet, SD3ControlNet
    from controlnet.tiny import tiny_unet
    from dit_bases import FLUX, SD3

    save_dit_controlnet(FluxControlNet(**dict(FLUX, num_layers=1, num_single_layers=1)), world / "flux-net.safetensors")
    save_dit_controlnet(SD3ControlNet(**dict(SD3, num_layers=1, attention_head_dim=4)), world / "sd3-narrow.safetensors")
    save_controlnet(ControlNet.from_unet(tiny_unet("sd1"), vae_scale_factor=2), world / "unet-net.safetensors")
    return world


@pytest.mark.parametrize("kind, extra, fragments", [
    ("sd3", ["--num-layers", "0"], ["--num-layers", "got 0"]),
    ("sd3", ["--num-layers", "4"], ["--num-layers 4", "4 blocks", "1..3"]),
    ("flux", ["--num-layers", "3"], ["--num-layers 3", "2 blocks", "1..2"]),
    ("flux", ["--num-single-layers", "4"], ["--num-single-layers 4", "0..3"]),
    ("sd3", ["--num-single-layers", "1"], ["--num-single-layers", "Flux"]),
    ("sd3", ["--unlock-decoder", "--copy", "lite"], ["--unlock-decoder", "--copy", "U-Net options"]),
    ("flux", ["--resolution", "40"], ["--resolution 40", "multiple of 16"]),
    ("sd3", ["--weighting-scheme", "cosine"], ["--weighting-scheme", "cosine"]),
    ("flux", ["--union"], ["--union", "U-Net options"]),
    ("sd3", ["--controlnet-layout", "xlabs"], ["--controlnet-layout", "Flux bases"]),
    ("flux", ["--controlnet-layout", "xlabs", "--num-single-layers", "1"], ["--num-single-layers 1", "double blocks only"]),
    ("flux", ["--controlnet-layout", "pixels"], ["--controlnet-layout", "instantx", "xlabs"]),
    ("flux", ["--controlnet-layout", "xlabs", "--controlnet", "{flux-net}"], ["flux-net.safetensors", "flux-controlnet,",
                                                                            "--controlnet-layout out"]),
    ("sd3", ["--controlnet", "{flux-net}"], ["flux-net.safetensors", "flux-controlnet", "SD3 base"]),
    ("flux", ["--controlnet", "{unet-net}"], ["unet-net.safetensors", "U-Net ControlNet", "Flux base"]),
    ("sd3", ["--controlnet", "{sd3-narrow}"], ["sd3-narrow.safetensors", "another SD3 base", "width 16 vs 32"]),
    ("sd3", ["--controlnet", "{sd3-narrow}", "--num-layers", "1"], ["--num-layers", "has its own"]),
])
def test_bad_input_is_one_line(nets, capsys, kind, extra, fragments):
    extra = [str(nets / f"{e[1:-1]}.safetensors") if e.startswith("{") else e for e in extra]
    assert_user_error(_argv(nets, kind, f"bad-{kind}", *extra), capsys, *fragments)
    assert not (nets / f"bad-{kind}" / "checkpoints").exists()


def test_an_unknown_controlnet_layout_is_refused_by_the_config(world):
    from controlnet.errors import InputError

    with pytest.raises(InputError, match="--controlnet-layout 'pixels'; use one of instantx, xlabs"):
        config(world, "flux", "bad-layout", controlnet_layout="pixels").validate()


def test_a_transformer_base_of_another_kind_and_dit_options_on_a_unet(world, tmp_path, capsys):
    other = tmp_path / "pixart"
    shutil.copytree(world / "sd3", other)
    index = (other / "model_index.json").read_text().replace("StableDiffusion3Pipeline", "PixArtSigmaPipeline")
    (other / "model_index.json").write_text(index)
    assert_user_error(_argv(world, "sd3", "bad-other", base=other), capsys, "PixArtSigmaPipeline",
                      "only Flux and SD3")
    unet = make_tiny_base(tmp_path / "unet")
    assert_user_error(_argv(world, "sd3", "bad-unet", "--num-layers", "2", "--weighting-scheme", "mode", base=unet),
                      capsys, "--num-layers", "--weighting-scheme", "SD3/Flux options")
    assert_user_error(_argv(world, "sd3", "bad-unet", "--controlnet-layout", "xlabs", base=unet), capsys,
                      "--controlnet-layout", "SD3/Flux options")


def test_two_cpu_processes_match_one_on_sd3(world):
    """DDP over gloo with the transformer recipe (its unused text outputs allowed): 2 processes × batch 1 is
    1 process × batch 2, up to float rounding (`same_run` says what that guarantees on any machine)."""
    steps, flags = 3, ["--num-layers", "2", "--learning-rate", "1e-3", "--max-steps", "3"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29521",
           *module_args(), *map(str, _argv(world, "sd3", "sd3-ddp2", *flags, "--batch-size", "1")[1:])]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = [json.loads(ln) for ln in (world / "sd3-ddp2" / "train_log.jsonl").read_text().splitlines()]
    one = train(config(world, "sd3", "sd3-ddp1", max_steps=steps, num_layers=2, batch_size=2))
    assert len(two) == steps
    same_run(one.log, world / "sd3-ddp1", two, world / "sd3-ddp2", lr=1e-3)


def test_sigterm_then_resume_gives_the_uninterrupted_run(world):
    """`controlnet train` on an SD3 base stopped by SIGTERM saves a checkpoint and exits 128+15; resumed, it
    ends with the weights of a run that was never stopped."""
    import signal
    import time

    out = world / "sd3-sigterm"
    cmd = [sys.executable, *module_args(), *map(str, _argv(world, "sd3", "sd3-sigterm", "--num-layers", "2",
                                                            "--learning-rate", "1e-3", "--batch-size", "2",
                                                            "--max-steps", "100000", "--checkpoint-every", "100000")[1:])]
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log, deadline = out / "train_log.jsonl", time.time() + 240
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 2):
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, output
    stopped = json.loads(log.read_text().splitlines()[-1])["step"]
    resumed = train(config(world, "sd3", "sd3-sigterm", resume="latest", max_steps=stopped + 1, num_layers=2))
    assert [r["step"] for r in resumed.log] == [stopped + 1]
    whole = train(config(world, "sd3", "sd3-whole", max_steps=stopped + 1, num_layers=2))
    assert max_diff(weights(whole.output_dir), weights(resumed.output_dir)) <= 1e-6
