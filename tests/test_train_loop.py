"""The training loop on a tiny random Stable Diffusion: it learns, locks what it must, resumes exactly,
skips non-finite steps, caches features without changing the result."""

import copy
import json
import shutil
import warnings

import pytest
import torch

from controlnet.training import TrainConfig, TrainingDiverged, load_base, make_fill50k, make_tiny_base, train

RES = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("train")
    base = make_tiny_base(root / "base")
    data = make_fill50k(root / "fill", n=24, size=32)
    return root, str(base), str(data)


def train_config(world, out, **kw):
    root, base, data = world
    defaults = dict(base_model=base, data=[data], output_dir=str(root / out), resolution=RES, batch_size=4,
                    learning_rate=1e-3, max_steps=8, checkpoint_every=1000, report_to="none", progress=False, seed=0)
    defaults.update(kw)
    return TrainConfig(**defaults)


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "diffusion_pytorch_model.safetensors"))


def max_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_learns_reloads_drops_prompts_and_keeps_base_locked(world):
    config = train_config(world, "learn", max_steps=200, report_to="tensorboard")
    base = load_base(config.base_model)
    before = {n: copy.deepcopy(m.state_dict()) for n, m in (("unet", base.unet), ("vae", base.vae),
                                                            ("text_encoder", base.text_encoder))}
    result = train(config, base=base)
    losses = [r["loss"] for r in result.log]
    assert len(losses) == 200
    first, last = sum(losses[:30]) / 30, sum(losses[-30:]) / 30
    assert last < 0.6 * first, (first, last)

    # the paper's 50% empty prompts, counted in the batches the text encoder actually saw
    empty = sum(r["empty_prompts"] for r in result.log) / sum(r["batch"] for r in result.log)
    assert 0.43 < empty < 0.57  # 800 prompts: +-4.5 standard deviations

    # locked means bit-identical
    for name, module in (("unet", base.unet), ("vae", base.vae), ("text_encoder", base.text_encoder)):
        after = module.state_dict()
        assert all(torch.equal(before[name][k], after[k]) for k in after), name

    out = result.output_dir
    from controlnet.checkpoints import load_controlnet
    from controlnet.nn import ControlNet

    trained = weights(out)
    for cn in (load_controlnet(out), ControlNet.from_pretrained(out)):
        assert max_diff(cn.state_dict(), trained) == 0.0
    fresh = ControlNet.from_unet(base.unet, vae_scale_factor=2).state_dict()
    assert max_diff(fresh, trained) > 1e-3  # it did train
    assert (out / "README.md").is_file() and (out / "loss.png").is_file()
    assert "200" in (out / "README.md").read_text()
    assert list((out / "controlnet").glob("events.out.tfevents.*")) or list(out.rglob("events.out.tfevents.*"))


def test_resume_follows_the_uninterrupted_run(world):
    """Killed after the checkpoint of step 3, resumed: the same weights at step 8 and the same losses."""
    full = train(train_config(world, "full", checkpoint_every=3, keep_checkpoints=5, max_steps=8))
    names = [p.name for p in sorted((full.output_dir / "checkpoints").iterdir())]
    assert names == ["step-000003", "step-000006", "step-000008"]  # periodic, and the last step

    killed = full.output_dir.parent / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.output_dir / "checkpoints" / "step-000003", killed / "checkpoints" / "step-000003")
    # a half-written checkpoint of the killed run must be ignored
    (killed / "checkpoints" / ".step-000006.tmp-123").mkdir()
    resumed = train(train_config(world, "killed", resume="latest", max_steps=8, checkpoint_every=3))
    assert [r["step"] for r in resumed.log] == [4, 5, 6, 7, 8]
    assert max_diff(weights(full.output_dir), weights(resumed.output_dir)) <= 1e-6
    full_losses = {r["step"]: r["loss"] for r in full.log}
    for r in resumed.log:
        assert r["loss"] == pytest.approx(full_losses[r["step"]], abs=1e-6)
    assert not list((killed / "checkpoints").glob(".step-*"))


def test_non_finite_loss_is_skipped_then_aborts(world, monkeypatch):
    import controlnet.training.loop as loop

    real = loop.draw

    def poisoned(seed, micro, *args, **kw):
        d = real(seed, micro, *args, **kw)
        if micro == 2 or micro >= 6:
            d.noise[:] = float("nan")
        return d

    monkeypatch.setattr(loop, "draw", poisoned)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(TrainingDiverged, match="learning-rate"):
            train(train_config(world, "nan", max_steps=20, max_bad_steps=3))
    assert any("NaN/inf" in str(w.message) for w in caught)
    log = [json.loads(ln) for ln in (world[0] / "nan" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9))  # aborted at the 3rd bad step in a row (step 9)
    assert log[2]["loss"] != log[2]["loss"] and all(r["loss"] == r["loss"] for r in log[3:6])


LR = 1e-3  # the learning rate of `train_config`


def same_run(log_a, folder_a, log_b, folder_b, lr=LR):
    """Two runs that differ only by float rounding (the batch composition of an encoder, the order of a
    reduction, another CPU's kernels): what holds on every machine, not a figure measured on one.

    Losses: both runs see the same samples, noise, time steps and dropped prompts, so each step's loss
    differs only by rounding (~1e-6 relative in float32) plus the effect of weights that differ, and
    weights can only differ along directions where the loss gradient is at rounding level, which moves
    the loss to second order only. 1e-4 relative holds with a wide margin; a real difference (another
    sample, noise draw or prompt drop) changes this model's loss by percents.

    Weights: Adam's update lr * m / (sqrt(v) + eps) does not depend on the gradient's scale, so an
    element whose gradient is far above rounding level moves the same in both runs, while an element
    whose gradient is at rounding level may move by up to lr per step either way. Such elements are
    rare on any machine (a gradient within ~1e-4 of its tensor's typical size), so at most 1% of all
    elements may differ by more than 1% of lr * steps. Unsynchronised, unaveraged or wrongly sliced
    data flips the sign of the gradient of a large fraction of elements, each then off by ~2 lr per step.
    """
    for x, y in zip(log_a, log_b, strict=True):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4), (x, y)
    wa, wb = weights(folder_a), weights(folder_b)
    assert wa.keys() == wb.keys()
    tolerance = 0.01 * lr * len(log_a)
    apart = sum(int(((wa[k].float() - wb[k].float()).abs() > tolerance).sum()) for k in wa)
    total = sum(v.numel() for v in wa.values())
    assert apart <= 0.01 * total, f"{apart} of {total} weights differ by more than {tolerance:g}"


def initial_weights(config):
    from controlnet.nn import ControlNet

    torch.manual_seed(config.seed)
    return ControlNet.from_unet(load_base(config.base_model).unet, vae_scale_factor=2).state_dict()


def test_cache_gives_the_same_run(world):
    plain = train(train_config(world, "plain", max_steps=4))
    cache_dir = world[0] / "cache"
    cold = train(train_config(world, "cold", max_steps=4, cache_dir=str(cache_dir)))
    warm = train(train_config(world, "warm", max_steps=4, cache_dir=str(cache_dir)))
    assert max_diff(weights(plain.output_dir), initial_weights(train_config(world, "plain"))) > 0.5 * LR  # it trained
    same_run(plain.log, plain.output_dir, cold.log, cold.output_dir)
    same_run(plain.log, plain.output_dir, warm.log, warm.output_dir)
    latent_dirs = list((cache_dir / "latents").iterdir())
    assert len(latent_dirs) == 1 and len(list(latent_dirs[0].rglob("*.safetensors"))) == 16


def test_cache_keys_follow_content_and_model(tmp_path):
    from controlnet.training import FeatureCache

    calls = []

    def encode(x):
        calls.append(len(x))
        return x.mean(dim=(1,), keepdim=True), x.std(dim=(1,), keepdim=True)

    images = torch.randn(3, 3, 4, 4)
    a = FeatureCache(tmp_path, "vae-a", "text-a")
    m1, _ = a.posterior(["k1", "k2", "k3"], images, encode)
    m2, _ = a.posterior(["k1", "k2", "k3"], images, encode)
    assert calls == [3] and torch.equal(m1, m2)
    FeatureCache(tmp_path, "vae-b", "text-a").posterior(["k1", "k2", "k3"], images, encode)
    assert calls == [3, 3]  # another model misses
    a.posterior(["k1", "k4", "k3"], images, encode)
    assert calls == [3, 3, 1]  # changed content misses
    texts = []
    e = a.text(["x", "", "x"], lambda p: (texts.append(list(p)), torch.randn(len(p), 2, 2))[1])
    assert texts == [["x", ""]] and torch.equal(e[0], e[2])
    assert torch.equal(FeatureCache(tmp_path, "vae-a", "text-a").text(["x"], None)[0], e[0])  # from disk


def test_unlocked_decoder_and_only_mid_control(world):
    """sd_locked=False trains the decoder (encoder stays bit-identical); only_mid_control leaves the
    other zero convs at zero."""
    config = train_config(world, "unlocked", max_steps=3, unlock_decoder=True, decoder_learning_rate=1e-3,
                 only_mid_control=True)
    base = load_base(config.base_model)
    before = copy.deepcopy(base.unet.state_dict())
    result = train(config, base=base)
    after = base.unet.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("up_blocks", "conv_out", "conv_norm_out")) for k in changed)
    assert (result.output_dir / "unet" / "config.json").is_file()
    w = weights(result.output_dir)
    assert all(w[k].abs().max() == 0 for k in w if k.startswith("controlnet_down_blocks"))
    assert w["controlnet_mid_block.weight"].abs().max() > 0


def test_validation_grid_and_fidelity_curve(world):
    pytest.importorskip("controlnet.annotators")
    root = world[0]
    cond = str(root / "fill" / "source" / "0.png")
    result = train(train_config(world, "val", max_steps=2, validate_every=1, validation_images=[cond],
                          validation_prompts=["red circle with blue background"], validation_annotator="canny",
                          num_validation_samples=1, validation_steps=2, save_original=True))
    out = result.output_dir
    from PIL import Image

    grid = Image.open(out / "validation" / "step-000002.png")
    assert grid.size == (3 * RES, RES)  # condition | with prompt | without prompt
    assert [r["step"] for r in result.fidelity] == [1, 2]
    assert all(0.0 <= r["fidelity_prompt"] <= 1.0 for r in result.fidelity)
    assert (out / "fidelity.png").is_file() and "fidelity" in (out / "README.md").read_text()
    from controlnet.checkpoints import load_controlnet

    assert max_diff(load_controlnet(out / "controlnet-original.safetensors").state_dict(), weights(out)) == 0.0


def test_bf16_accumulation_checkpointing_and_bad_samples(world, tmp_path):
    import numpy as np
    from PIL import Image

    from controlnet.training.toy import circle_pair

    rng = np.random.default_rng(0)
    rows = []
    for i in range(6):
        cond, target, prompt = circle_pair(32, rng)
        Image.fromarray(target).save(tmp_path / f"t{i}.png")
        Image.fromarray(cond).save(tmp_path / f"c{i}.png")
        rows.append(json.dumps({"image": f"t{i}.png", "conditioning_image": f"c{i}.png", "text": prompt}))
    (tmp_path / "t4.png").write_bytes(b"truncated")
    (tmp_path / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = train(train_config(world, "bf16", data=[str(tmp_path)], max_steps=2, batch_size=3, mixed_precision="bf16",
                              gradient_checkpointing=True, gradient_accumulation_steps=2))
    assert result.bad_samples == 1
    assert all(r["loss"] == r["loss"] and r["batch"] == 6 for r in result.log)
    w = weights(result.output_dir)
    assert all(v.dtype == torch.float32 for v in w.values())  # master weights stay fp32
    assert "1 unusable samples skipped" in (result.output_dir / "README.md").read_text()


def test_training_works_inside_a_callers_no_grad(world):
    """A library call must not depend on the caller's autograd mode (e.g. a notebook under no_grad)."""
    with torch.no_grad():
        result = train(train_config(world, "nograd", max_steps=2))
    assert [r["step"] for r in result.log] == [1, 2]
    assert max_diff(weights(result.output_dir), initial_weights(train_config(world, "nograd2", max_steps=2))) > 0
