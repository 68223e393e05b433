"""ControlPipeline: parity with diffusers' ControlNet pipelines, modes, windows, units, seeds, img2img."""

import pytest
import torch

from controlnet.pipeline import ControlPipeline, ControlUnit
from controlnet.pipeline.modes import active, connection_levels, mode_scales
from tiny_models import (
    FAMILIES,
    controlnet_pipeline,
    random_hint,
    start_latents,
    tiny_controlnet,
    tiny_pipeline,
)


@pytest.fixture(autouse=True)
def _no_grad():
    """Inference tests: no autograd (per test, not process-wide, so training tests keep theirs)."""
    with torch.no_grad():
        yield
W, H = 64, 48  # latent 8x6: the tiny U-Net's two levels give 8x6 and 4x3
SCHEDULER = {"sd1": "ddim", "sd2": "ddim", "sdxl": "euler"}  # by name: the named scheduler must equal diffusers'
TOL = dict(atol=1e-4, rtol=0)


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def models(family):
    pipe = tiny_pipeline(family)
    return family, pipe, tiny_controlnet(pipe, seed=1), tiny_controlnet(pipe, seed=2)


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_pipeline("sd1")
    return pipe, tiny_controlnet(pipe, seed=1), tiny_controlnet(pipe, seed=2)


def ours(pipe, units, steps=2, **kw):
    kw.setdefault("latents", start_latents(pipe, W, H, kw.get("num_images", 1)))
    kw.setdefault("guidance_scale", 7.0)
    kw.setdefault("scheduler", "euler" if pipe.unet.config.addition_embed_type else "ddim")
    return ControlPipeline.from_diffusers(pipe)("a red cube", units, steps=steps, output_type="latent", progress=False, **kw).images


def reference(pipe, nets, images, steps=2, **kw):
    kw.setdefault("latents", start_latents(pipe, W, H))
    kw.setdefault("guidance_scale", 7.0)
    return controlnet_pipeline(pipe, nets)("a red cube", image=images, num_inference_steps=steps, output_type="latent", **kw).images


def count_calls(cn):
    """Record the batch size of every ControlNet forward and every hint-encoder forward."""
    calls = {"forward": [], "embed": 0}
    forward, embed = cn.forward, cn.controlnet_cond_embedding.forward

    def spy_forward(sample, *a, **k):
        calls["forward"].append(sample.shape[0])
        return forward(sample, *a, **k)

    def spy_embed(*a, **k):
        calls["embed"] += 1
        return embed(*a, **k)

    cn.forward, cn.controlnet_cond_embedding.forward = spy_forward, spy_embed
    return calls


# ------------------------------------------------------------------------------------ parity


def test_balanced_equals_diffusers(models):
    family, pipe, cn, _ = models
    hint = random_hint(W, H)
    got = ours(pipe, [ControlUnit(cn, hint, weight=0.8, resize=None)], scheduler=SCHEDULER[family])
    want = reference(pipe, cn, hint, controlnet_conditioning_scale=0.8)
    torch.testing.assert_close(got, want, **TOL)
    base = pipe("a red cube", num_inference_steps=2, guidance_scale=7.0, latents=start_latents(pipe, W, H), width=W,
                height=H, output_type="latent").images
    assert (got - base).abs().max() > 1e-2  # the control is visible, so the parity means something


def test_two_units_equal_multicontrolnet(models):
    family, pipe, cn1, cn2 = models
    h1, h2 = random_hint(W, H, seed=1), random_hint(W, H, seed=2)
    units = [ControlUnit(cn1, h1, weight=0.6, resize=None), ControlUnit(cn2, h2, weight=1.3, start=0.5, resize=None)]
    got = ours(pipe, units, steps=4)
    want = reference(pipe, [cn1, cn2], [h1, h2], steps=4, controlnet_conditioning_scale=[0.6, 1.3],
                     control_guidance_start=[0.0, 0.5], control_guidance_end=[1.0, 1.0])
    torch.testing.assert_close(got, want, **TOL)


def test_control_mode_with_logspace_equals_guess_mode(models):
    family, pipe, cn, _ = models
    hint = random_hint(W, H)
    scales = torch.logspace(-1, 0, cn.num_connections).tolist()
    got = ours(pipe, [ControlUnit(cn, hint, weight=0.9, mode="control", layer_scales=scales, resize=None)])
    want = reference(pipe, cn, hint, controlnet_conditioning_scale=0.9, guess_mode=True)
    torch.testing.assert_close(got, want, **TOL)
    balanced = ours(pipe, [ControlUnit(cn, hint, weight=0.9, layer_scales=scales, resize=None)])
    assert (got - balanced).abs().max() > 1e-3  # cond-only really differs from both branches


@pytest.mark.parametrize("start, end", [(0.0, 0.5), (0.25, 0.75), (0.5, 1.0)])
def test_window_equals_control_guidance_start_end(sd1, start, end):
    pipe, cn, _ = sd1
    hint = random_hint(W, H)
    calls = count_calls(cn)
    got = ours(pipe, [ControlUnit(cn, hint, start=start, end=end, resize=None)], steps=4)
    assert len(calls["forward"]) == sum(active(i, 4, start, end) for i in range(4)) == 2  # not run outside the window
    del cn.forward, cn.controlnet_cond_embedding.forward
    want = reference(pipe, cn, hint, steps=4, control_guidance_start=start, control_guidance_end=end)
    torch.testing.assert_close(got, want, **TOL)


# ------------------------------------------------------------------------------------ no-op controls


@pytest.mark.parametrize("unit_kw", [dict(weight=0.0), dict(end=0.0), dict(start=0.0, end=0.0, mode="control")])
def test_zero_weight_or_end_zero_equals_base_pipeline(models, unit_kw):
    family, pipe, cn, _ = models
    calls = count_calls(cn)
    got = ours(pipe, [ControlUnit(cn, random_hint(W, H), resize=None, **unit_kw)], scheduler=SCHEDULER[family])
    del cn.forward, cn.controlnet_cond_embedding.forward
    assert calls == {"forward": [], "embed": 0}  # an off unit costs nothing
    base = pipe("a red cube", num_inference_steps=2, guidance_scale=7.0, latents=start_latents(pipe, W, H), width=W,
                height=H, output_type="latent").images
    torch.testing.assert_close(got, base, **TOL)


def test_mask_of_zeros_is_no_control_and_mask_of_ones_is_full_control(sd1):
    pipe, cn, _ = sd1
    hint = random_hint(W, H)
    ones, zeros = torch.ones(H, W, 1), torch.zeros(H, W, 1)
    full = ours(pipe, [ControlUnit(cn, hint, resize=None)])
    torch.testing.assert_close(ours(pipe, [ControlUnit(cn, hint, resize=None, mask=ones.numpy())]), full, **TOL)
    none = ours(pipe, [ControlUnit(cn, hint, resize=None, mask=zeros.numpy())])
    torch.testing.assert_close(none, ours(pipe, [ControlUnit(cn, hint, resize=None, weight=0.0)]), **TOL)
    half = torch.zeros(H, W, 1)
    half[:, W // 2 :] = 1
    left_only = ours(pipe, [ControlUnit(cn, hint, resize=None, mask=half.numpy())])
    assert (left_only - full).abs().max() > 1e-3 and (left_only - none).abs().max() > 1e-3


# ------------------------------------------------------------------------------------ efficiency


def test_hint_embedded_once_and_cond_only_modes_run_half_the_batch(sd1):
    pipe, cn, _ = sd1
    calls = count_calls(cn)
    ours(pipe, [ControlUnit(cn, random_hint(W, H), mode="control", resize=None)], steps=3, num_images=2)
    assert calls == {"forward": [2, 2, 2], "embed": 1}
    calls = count_calls(cn)
    ours(pipe, [ControlUnit(cn, random_hint(W, H), mode="balanced", resize=None)], steps=3, num_images=2)
    assert calls == {"forward": [4, 4, 4], "embed": 1}
    calls = count_calls(cn)
    ours(pipe, [ControlUnit(cn, random_hint(W, H), mode="cfg_rw", resize=None)], steps=2, guidance_scale=1.0)
    assert calls == {"forward": [1, 1], "embed": 1}  # without CFG there is only the cond batch
    del cn.forward, cn.controlnet_cond_embedding.forward


def test_controlnet_dtype_is_read_once_per_call_not_per_step(sd1, monkeypatch):
    """A diffusers model's `.dtype` walks every module (1.6 ms for an SD 1.5 ControlNet on a slow CPU):
    read per step and unit it cost two units 7% against diffusers on a GPU (docs/performance.md)."""
    from controlnet.nn import ControlNet

    pipe, cn, cn2 = sd1
    reads = []
    dtype = ControlNet.dtype
    monkeypatch.setattr(ControlNet, "dtype", property(lambda self: reads.append(1) or dtype.fget(self)))
    per_call = []
    for steps in (2, 6):
        reads.clear()
        ours(pipe, [ControlUnit(cn, random_hint(W, H), resize=None), ControlUnit(cn2, random_hint(W, H), resize=None)], steps=steps)
        per_call.append(len(reads))
    assert per_call[0] == per_call[1]


# ------------------------------------------------------------------------------------ modes


def test_mode_scales():
    levels = [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]  # SD 1.x / 2.x
    assert mode_scales("balanced", 0.5, levels) == [0.5] * 13
    soft = mode_scales("prompt", 2.0, levels)
    assert soft == mode_scales("control", 2.0, levels)
    assert soft[-1] == 2.0 and abs(soft[0] - 2.0 * 0.825**12) < 1e-12
    assert mode_scales("cfg_rw", 1.0, levels) == [0.125] * 3 + [0.25] * 3 + [0.5] * 3 + [1.0] * 4  # 64/h_i / 8
    assert mode_scales("cfg_rw", 1.0, [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]) == [0.25] * 3 + [0.5] * 3 + [1.0] * 4  # SDXL


def test_connection_levels_of_real_families():
    from types import SimpleNamespace

    sd = SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280, 1280), layers_per_block=2))
    xl = SimpleNamespace(config=SimpleNamespace(block_out_channels=(320, 640, 1280), layers_per_block=2))
    assert connection_levels(sd) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert connection_levels(xl) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]


def test_prompt_mode_and_cfg_rw_differ_from_balanced_and_each_other(sd1):
    pipe, cn, _ = sd1
    hint = random_hint(W, H)
    out = {m: ours(pipe, [ControlUnit(cn, hint, mode=m, resize=None)]) for m in ("balanced", "prompt", "control", "cfg_rw")}
    names = list(out)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert (out[a] - out[b]).abs().max() > 1e-4, (a, b)
    explicit = ours(pipe, [ControlUnit(cn, hint, mode="prompt", resize=None,
                                       layer_scales=mode_scales("prompt", 1.0, connection_levels(pipe.unet)))])
    torch.testing.assert_close(explicit, out["prompt"], atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------ sampling


def test_per_image_seeds_are_reproducible(sd1):
    pipe, cn, _ = sd1
    p = ControlPipeline.from_diffusers(pipe)
    unit = ControlUnit(cn, random_hint(W, H), resize=None)
    kw = dict(steps=2, output_type="latent", progress=False, scheduler="euler_a")
    two = p("x", [unit], seed=11, num_images=2, **kw)
    second = p("x", [unit], seed=12, num_images=1, **kw)
    assert two.seeds == [11, 12] and second.seeds == [12]
    torch.testing.assert_close(two.images[1:], second.images, atol=1e-3, rtol=0)  # batch 2 vs 1: float noise only
    assert (two.images[0] - two.images[1]).abs().max() > 1e-2
    auto = p("x", [unit], seed=None, **kw)
    torch.testing.assert_close(p("x", [unit], seed=auto.seeds[0], **kw).images, auto.images, atol=0, rtol=0)


@pytest.mark.parametrize("name", ["ddim", "euler", "euler_a", "dpmpp_2m", "unipc", "heun", "dpmpp_2m_karras"])
def test_named_schedulers_run(sd1, name):
    pipe, cn, _ = sd1
    out = ControlPipeline.from_diffusers(pipe)("x", [ControlUnit(cn, random_hint(W, H))], steps=3, scheduler=name,
                                              seed=0, output_type="np", progress=False)
    assert out.images.shape == (1, H, W, 3) and torch.isfinite(torch.from_numpy(out.images)).all()


def test_callback_runs_every_step_and_img2img_runs_strength_of_the_schedule(sd1):
    pipe, cn, _ = sd1
    p = ControlPipeline.from_diffusers(pipe)
    seen = []
    out = p("x", [ControlUnit(cn, random_hint(W, H))], steps=4, seed=0, callback=lambda i, t, x: seen.append(int(t)),
            progress=False)
    assert len(seen) == 4 and len(out.images) == 1 and out.images[0].size == (W, H)
    seen.clear()
    init = random_hint(W, H, seed=7)
    out = p("x", [ControlUnit(cn, random_hint(W, H))], steps=4, seed=0, init_image=init, strength=0.5,
            callback=lambda i, t, x: seen.append(int(t)), progress=False, output_type="latent")
    assert len(seen) == 2 and seen[0] < 500
    # strength -> 0 keeps the image: the latent stays near the init image's latent
    near = p("x", [], steps=10, seed=0, init_image=init, strength=0.1, output_type="latent", progress=False).images
    far = p("x", [], steps=10, seed=0, init_image=init, strength=1.0, output_type="latent", progress=False).images
    z0 = p.encode_image(init, W, H)
    assert (near - z0).abs().mean() < (far - z0).abs().mean()


def test_output_types_and_hints(sd1):
    pipe, cn, _ = sd1
    p = ControlPipeline.from_diffusers(pipe)
    unit = ControlUnit(cn, random_hint(2 * W, 2 * H))  # resized (crop_and_resize) to the output size
    kw = dict(steps=1, seed=0, width=W, height=H, progress=False)
    pil, arr, pt = (p("x", [unit], output_type=t, **kw) for t in ("pil", "np", "pt"))
    assert pil.images[0].size == (W, H) and arr.images.shape == (1, H, W, 3) and pt.images.shape == (1, 3, H, W)
    torch.testing.assert_close(torch.from_numpy(arr.images).permute(0, 3, 1, 2), pt.images)
    assert len(pil.hints) == 1 and pil.hints[0][0].size == (W, H)


def test_global_pool_controlnet_acts_on_cond_branch_only(sd1):
    pipe, _, _ = sd1
    cn = tiny_controlnet(pipe, seed=3, global_pool=True)
    calls = count_calls(cn)
    ours(pipe, [ControlUnit(cn, random_hint(W, H), resize=None)])
    assert calls["forward"] == [1, 1]


def test_default_size_comes_from_the_condition_image(sd1):
    pipe, cn, _ = sd1
    p = ControlPipeline.from_diffusers(pipe)
    out = p("x", [ControlUnit(cn, random_hint(70, 45))], steps=1, seed=0, progress=False)  # rounded down to /8
    assert out.images[0].size == (64, 40)
    out = p("x", [ControlUnit(cn, random_hint(128, 96))], steps=1, seed=0, width=64, progress=False)  # aspect kept
    assert out.images[0].size == (64, 48)


def test_controlnets_run_in_the_unets_dtype_unless_the_unit_says(sd1):
    """A ControlNet stored in fp16 runs in the fp32 U-Net's dtype (0.49 -> 0.14 s/image on the CPU for
    the built-in model); `ControlUnit(dtype=...)` keeps another dtype on purpose."""
    pipe, _, _ = sd1
    half = tiny_controlnet(pipe, seed=1).to(torch.float16)
    hint = random_hint(W, H)
    as_fp32 = ours(pipe, [ControlUnit(half, hint, resize=None)])
    assert half.dtype == torch.float32
    reference_fp32 = ours(pipe, [ControlUnit(tiny_controlnet(pipe, seed=1).to(torch.float16).float(), hint, resize=None)])
    assert torch.equal(as_fp32, reference_fp32)
    ours(pipe, [ControlUnit(half, hint, resize=None, dtype="fp16")])
    assert half.dtype == torch.float16


def test_latent_normalisation_is_one_invertible_pair():
    from types import SimpleNamespace

    from controlnet.pipeline.sampling import denormalize_latents, normalize_latents

    z = torch.randn(2, 4, 3, 5)
    plain = SimpleNamespace(config=SimpleNamespace(scaling_factor=0.18215))
    assert torch.equal(normalize_latents(plain, z), z * 0.18215)
    stats = SimpleNamespace(config=SimpleNamespace(scaling_factor=0.5, latents_mean=[1.0, 2.0, 3.0, 4.0], latents_std=[2.0] * 4))
    x = normalize_latents(stats, z)
    torch.testing.assert_close(x[:, 1], (z[:, 1] - 2.0) * 0.5 / 2.0)
    torch.testing.assert_close(denormalize_latents(stats, x), z)
    torch.testing.assert_close(denormalize_latents(plain, normalize_latents(plain, z)), z)
