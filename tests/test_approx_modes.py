"""Approximate sampling modes (controlnet.pipeline.reuse, controlnet.nn.deep_cache): each skips the work
it says (forwards counted), is the exact sampler at its identity value, and refuses bad values."""

import pytest
import torch

from controlnet.errors import InputError
from controlnet.nn import controlled_unet
from controlnet.nn.deep_cache import shallow_control, shallow_count, shallow_unet
from controlnet.pipeline import ControlPipeline, ControlUnit
from controlnet.pipeline.reuse import Approximation, approximation, refreshes
from tiny_models import random_hint, start_latents, tiny_controlnet, tiny_pipeline

W, H = 64, 48


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_pipeline("sd1")
    return ControlPipeline.from_diffusers(pipe), tiny_controlnet(pipe, seed=1), tiny_controlnet(pipe, seed=2)


def sample(ours, units, steps=6, num_images=1, guidance_scale=5.0, **kw):
    return ours("a red cube", units, steps=steps, guidance_scale=guidance_scale, scheduler="ddim", output_type="latent",
                latents=start_latents(ours, W, H, num_images), num_images=num_images, progress=False, **kw).images


def count_forwards(*modules):
    """Batch sizes of every forward of each module, in call order (forward hooks, removed by the caller)."""
    seen = [[] for _ in modules]
    handles = [m.register_forward_hook(lambda mod, args, kwargs, out, k=k: seen[k].append(
        (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True) for k, m in enumerate(modules)]
    return seen, handles


def unit(cn, **kw):
    return ControlUnit(cn, random_hint(W, H), resize=None, **kw)


# ------------------------------------------------------------------------------------ the policies


def test_refresh_policy():
    assert [refreshes(i, 6, 1) for i in range(6)] == [True] * 6
    assert [refreshes(i, 6, 2) for i in range(6)] == [True, False, True, False, True, False]
    assert [refreshes(i, 6, 3, start=0.5) for i in range(6)] == [True, True, True, True, False, False]
    assert [refreshes(i, 10, 4, start=0.25) for i in range(10)] == [True, True, True, True, False, False, False, True, False, False]


@pytest.mark.parametrize("field", ["control_reuse", "deepcache"])
@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None])
def test_bad_periods_are_refused_naming_the_field(field, bad):
    with pytest.raises(InputError, match=field):
        Approximation(**{field: bad})


@pytest.mark.parametrize("bad", [-0.1, 1.0, "half"])
def test_bad_reuse_start_is_refused(bad):
    with pytest.raises(InputError, match="control_reuse_from"):
        Approximation(control_reuse=2, control_reuse_from=bad)


def test_approximation_from_a_dict_and_unknown_fields():
    assert approximation({"control_reuse": 2.0}) == Approximation(control_reuse=2)
    assert approximation(None).exact
    with pytest.raises(InputError, match="control_cond_only"):
        approximation({"control_cond_only": "yes"})
    with pytest.raises(InputError, match="unknown field 'reuse'"):
        approximation({"reuse": 2})


# ------------------------------------------------------------------------------------ identities


def test_identity_values_are_the_exact_sampler_bit_for_bit(sd1):
    ours, cn, cn2 = sd1
    units = [unit(cn, schedule="0:1,0.5:0.3"), unit(cn2, mode="control", end=0.8)]
    exact = sample(ours, units, num_images=2)
    same = sample(ours, units, num_images=2, approx=Approximation(control_reuse=1, control_reuse_from=0.5, deepcache=1))
    assert torch.equal(exact, same)


def test_cond_only_without_guidance_is_exact(sd1):
    ours, cn, _ = sd1
    exact = sample(ours, [unit(cn)], guidance_scale=1.0)
    assert torch.equal(exact, sample(ours, [unit(cn)], guidance_scale=1.0, approx={"control_cond_only": True}))


# ------------------------------------------------------------------------------------ control_reuse


@pytest.mark.parametrize(("k", "start", "runs"), [(2, 0.0, 3), (3, 0.0, 2), (3, 0.5, 4), (6, 0.0, 1)])
def test_control_reuse_runs_the_controlnet_every_kth_step(sd1, k, start, runs):
    ours, cn, _ = sd1
    seen, handles = count_forwards(cn)
    try:
        out = sample(ours, [unit(cn)], approx=Approximation(control_reuse=k, control_reuse_from=start))
    finally:
        [h.remove() for h in handles]
    assert seen[0] == [2] * runs
    assert not torch.equal(out, sample(ours, [unit(cn)]))


def test_reused_residuals_take_each_steps_schedule_factor(sd1):
    """The ControlNet runs once (k = 6), yet a schedule doubling the weight from half the steps on
    changes the result: the kept residuals are unscaled and each step applies its own factor."""
    ours, cn, _ = sd1
    once = Approximation(control_reuse=6)
    seen, handles = count_forwards(cn)
    try:
        doubled = sample(ours, [unit(cn, schedule="0:1,0.5:2")], approx=once)
    finally:
        [h.remove() for h in handles]
    assert len(seen[0]) == 1
    assert not torch.equal(doubled, sample(ours, [unit(cn)], approx=once))


# ------------------------------------------------------------------------------------ control_cond_only


def test_cond_only_runs_each_controlnet_on_the_conditional_half(sd1):
    ours, cn, cn2 = sd1
    seen, handles = count_forwards(cn, cn2)
    try:
        out = sample(ours, [unit(cn), unit(cn2)], steps=3, num_images=2, approx={"control_cond_only": True})
    finally:
        [h.remove() for h in handles]
    assert seen == [[2, 2, 2], [2, 2, 2]]  # batch 2 images, not the CFG batch of 4
    exact = sample(ours, [unit(cn), unit(cn2)], steps=3, num_images=2)
    assert not torch.equal(out, exact)
    assert (out - exact).abs().max() < 0.5 * exact.abs().max()  # an approximation, not another picture


# ------------------------------------------------------------------------------------ deepcache


def test_deepcache_runs_the_deep_blocks_every_nth_step(sd1):
    ours, cn, _ = sd1
    unet = ours.unet
    seen, handles = count_forwards(unet.mid_block, unet.up_blocks[0], unet.up_blocks[-1], unet.down_blocks[0],
                                   cn.mid_block, cn.down_blocks[0])
    try:
        out = sample(ours, [unit(cn)], steps=6, approx={"deepcache": 3})
    finally:
        [h.remove() for h in handles]
    assert [len(s) for s in seen] == [2, 2, 6, 6, 2, 6]  # deep parts at steps 0 and 3; shallow ones every step
    assert not torch.equal(out, sample(ours, [unit(cn)], steps=6))


def test_shallow_step_on_its_own_deep_features_is_the_full_step(sd1):
    """The split is exact: the shallow path fed the deep features of the same input reproduces the
    controlled U-Net, and the shallow ControlNet its first residuals."""
    ours, cn, _ = sd1
    unet, g = ours.unet, torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, H // 8, W // 8, generator=g)
    states = torch.randn(2, 77, unet.config.cross_attention_dim, generator=g)
    emb = cn.embed_hint(torch.rand(1, 3, H, W, generator=g))
    res = cn(x, 500, states, hint_embedding=emb)
    keep = {}
    full = controlled_unet(unet, x, 500, states, [(res, 0.7)], keep=keep)
    count = shallow_count(unet)
    shallow = shallow_control(cn, x, 500, states, emb, count)
    for a, b in zip(shallow, res.down[:count], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    eps = shallow_unet(unet, x, 500, states, keep["deep"], [0.7 * r for r in shallow])
    torch.testing.assert_close(eps, full, atol=1e-5, rtol=0)


def test_all_modes_together_on_an_sdxl_shaped_model():
    pipe = tiny_pipeline("sdxl")
    ours, cn = ControlPipeline.from_diffusers(pipe), tiny_controlnet(pipe, seed=1)
    units = [ControlUnit(cn, random_hint(W, H), resize=None)]
    kw = dict(steps=4, guidance_scale=5.0, scheduler="euler", output_type="latent", progress=False,
              latents=start_latents(pipe, W, H))
    exact = ours("a red cube", units, **kw).images
    approx = ours("a red cube", units, approx={"control_reuse": 2, "control_cond_only": True, "deepcache": 2}, **kw).images
    assert torch.isfinite(approx).all() and not torch.equal(exact, approx)


# ------------------------------------------------------------------------------------ the command line


@pytest.mark.parametrize(("argv", "fragment"), [
    (["--control-reuse", "0"], "control_reuse"),
    (["--control-reuse", "-2"], "control_reuse"),
    (["--control-reuse", "1.5"], "--control-reuse"),
    (["--deepcache", "0"], "deepcache"),
    (["--deepcache", "x"], "--deepcache"),
    (["--control-reuse", "2", "--control-reuse-from", "1"], "control_reuse_from"),
])
def test_evaluate_refuses_bad_approximate_modes_before_loading_anything(argv, fragment, tmp_path, capsys):
    from bad_input_tools import assert_user_error

    assert_user_error(["evaluate", "--controlnet", "mini:edges", "-o", tmp_path / "out", *argv], capsys, fragment)
    assert not (tmp_path / "out").exists()


def test_evaluate_keys_its_cache_by_the_approximate_modes():
    from controlnet.evaluation import EvalSettings

    assert "approx" not in EvalSettings().check().sampling()  # exact runs keep their cached pictures
    assert EvalSettings(approx={"deepcache": 2, "control_reuse": 1}).check().sampling()["approx"] == {"deepcache": 2}
