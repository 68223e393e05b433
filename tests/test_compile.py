"""`ControlPipeline(..., compile=True)` (`controlnet.pipeline.compiled`): equal to eager within fp32's
noise for one and two units, windows, weights, weight schedules, modes and inpainting; weights and
windows are inputs, not recompile triggers; a new size compiles anew and is counted; where compiling
is impossible the pipeline warns and runs eagerly (and `generate --compile` says so).

Slow (inductor compiles C++ for every graph): the compiled pipeline is shared by the module, so the
U-Net and ControlNet graphs are compiled once (tiny models, 64x48, 2 steps) and the later tests
reuse them. They skip, saying why, only where inductor cannot compile at all (no C++ compiler or no
Python headers); the recompile-count and fallback tests need no compiler and run everywhere."""

import numpy as np
import pytest
import torch
from PIL import Image

from controlnet.pipeline import ControlPipeline, ControlUnit
from controlnet.pipeline import compiled as compiled_module
from tiny_models import random_hint, tiny_controlnet, tiny_pipeline

W, H = 64, 48
TOL = dict(atol=1e-4, rtol=0)  # fp32: inductor fuses and reorders sums, so the last bits differ


@pytest.fixture(scope="module")
def sd1():
    pipe = tiny_pipeline("sd1")
    return pipe, tiny_controlnet(pipe, seed=1), tiny_controlnet(pipe, seed=2)


@pytest.fixture(scope="module")
def pipes(sd1):
    problem = compiled_module.compile_problem("cpu")
    if problem is not None:
        pytest.skip(f"torch.compile cannot run here: {problem}")
    pipe = sd1[0]
    return ControlPipeline.from_diffusers(pipe), ControlPipeline.from_diffusers(pipe).enable_compile()


def sample(pipe, units, size=(W, H), **kw):
    with torch.no_grad():
        return pipe("a red cube", units, steps=2, guidance_scale=7.0, output_type="latent", progress=False,
                    latents=_latents(*size), width=size[0],
                    height=size[1], **kw).images


def _latents(width, height):
    return torch.randn(1, 4, height // 8, width // 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.slow
@pytest.mark.timeout(1800)  # inductor builds C++ for each graph: minutes on a busy 2-core machine
def test_compiled_equals_eager_for_units_windows_weights_schedules_and_modes_without_recompiling(sd1, pipes):
    _, cn1, cn2 = sd1
    eager, fast = pipes
    hint1, hint2 = random_hint(W, H, seed=1), random_hint(W, H, seed=2)
    cases = [
        [ControlUnit(cn1, hint1)],
        [ControlUnit(cn1, hint1, weight=0.4, end=0.5)],                       # another weight, a window
        [ControlUnit(cn1, hint1), ControlUnit(cn2, hint2, weight=0.7, start=0.5)],  # two units
        [ControlUnit(cn2, hint2, mode="prompt", schedule=[(0, 1.0), (0.5, 0.3)])],  # per-connection scales, schedule
        [],                                                                    # no unit: zero residuals
    ]
    graphs = []
    for units in cases:
        torch.testing.assert_close(sample(fast, units), sample(eager, units), **TOL)
        graphs.append(fast.compiled.stats["graphs"])
    assert graphs[0] >= 2  # the U-Net step and the ControlNet
    assert graphs == [graphs[0]] * len(cases)  # nothing above recompiled
    assert fast.compiled.failed is None
    assert "graph(s) compiled" in fast.compiled.summary()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compiled_inpainting_equals_eager(sd1, pipes):
    eager, fast = pipes
    picture = random_hint(W, H, seed=3)
    mask = np.zeros((H, W), np.uint8)
    mask[8:40, 16:48] = 255
    units = [ControlUnit(sd1[1], random_hint(W, H, seed=1))]
    kw = dict(init_image=picture, mask_image=Image.fromarray(mask, "L"))
    torch.testing.assert_close(sample(fast, units, **kw), sample(eager, units, **kw), **TOL)


def test_a_new_size_compiles_anew_and_is_counted_but_weights_and_windows_do_not(sd1):
    """Counted with dynamo's "eager" backend (the same tracing and guards as inductor, no C++ build),
    so this runs on every machine and in seconds."""
    pipe, cn, _ = sd1
    eager = ControlPipeline.from_diffusers(pipe)
    fast = ControlPipeline.from_diffusers(pipe).enable_compile(backend="eager")
    hint = random_hint(W, H)
    torch.testing.assert_close(sample(fast, [ControlUnit(cn, hint)]), sample(eager, [ControlUnit(cn, hint)]), **TOL)
    first = fast.compiled.stats["graphs"]
    sample(fast, [ControlUnit(cn, hint, weight=0.3, end=0.5, mode="prompt")])
    sample(fast, [])
    assert first >= 2 and fast.compiled.stats["graphs"] == first  # weights, windows, modes, no unit: no recompile
    sample(fast, [], size=(64, 64))
    bigger = fast.compiled.stats["graphs"]
    assert bigger > first and fast.compiled.stats["compiling_calls"] >= 2 and fast.compiled.stats["warmup_s"] > 0
    torch.testing.assert_close(sample(fast, [], size=(64, 64)), sample(eager, [], size=(64, 64)), **TOL)
    assert fast.compiled.stats["graphs"] == bigger  # that size again: the graph is reused
    assert f"{bigger} graph(s) compiled" in fast.compiled.summary()


def test_no_compiler_warns_and_runs_eagerly(sd1, monkeypatch):
    """Simulates a machine where inductor cannot build (`compile_problem` finds no C++ compiler)."""
    monkeypatch.setattr(compiled_module, "compile_problem", lambda device: "InvalidCxxCompiler: no C++ compiler")
    pipe, cn, _ = sd1
    eager = ControlPipeline.from_diffusers(pipe)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler.*running eagerly"):
        fast = ControlPipeline.from_diffusers(pipe).enable_compile()
    units = [ControlUnit(cn, random_hint(W, H))]
    assert torch.equal(sample(fast, units), sample(eager, units))
    assert fast.compiled.summary().startswith("compile: off (torch.compile is unavailable here")


def test_a_failing_compile_warns_once_and_runs_eagerly(sd1):
    """A backend that fails the way inductor does without a compiler (dynamo wraps it in
    BackendCompilerFailed): the call still returns the eager result, later calls do not retry."""
    calls = []

    def failing_backend(graph, example_inputs):
        calls.append(1)
        raise RuntimeError("simulated: cannot build the kernels")

    pipe, cn, _ = sd1
    eager = ControlPipeline.from_diffusers(pipe)
    fast = ControlPipeline.from_diffusers(pipe).enable_compile(backend=failing_backend)
    units = [ControlUnit(cn, random_hint(W, H))]
    with pytest.warns(RuntimeWarning, match="compiling failed.*simulated: cannot build the kernels.*running eagerly"):
        got = sample(fast, units)
    assert torch.equal(got, sample(eager, units))
    assert len(calls) == 1 and "simulated" in fast.compiled.failed
    assert torch.equal(sample(fast, units), got) and len(calls) == 1


def test_generate_compile_reports_its_line_and_falls_back_where_compile_is_unavailable(tmp_path, monkeypatch, capsys):
    from controlnet.cli import main
    from tiny_models import save_base_and_controlnet

    monkeypatch.setattr(compiled_module, "compile_problem", lambda device: "InvalidCxxCompiler: no C++ compiler")
    save_base_and_controlnet(tmp_path)
    random_hint(W, H).save(tmp_path / "hint.png")
    argv = ["generate", "--model", str(tmp_path / "base"), "--controlnet", str(tmp_path / "cn"), "--image",
            str(tmp_path / "hint.png"), "--steps", "1", "--seed", "1", "--compile", "-o", str(tmp_path / "out")]
    with pytest.warns(RuntimeWarning, match="running eagerly"):
        assert main(argv) == 0
    err = capsys.readouterr().err
    assert "compile: off (torch.compile is unavailable here (InvalidCxxCompiler: no C++ compiler))" in err
    assert len(list((tmp_path / "out").glob("0*.png"))) == 1
