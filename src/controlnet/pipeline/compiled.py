"""`ControlPipeline(..., compile=True)`: the U-Net and the ControlNets under `torch.compile`.

What is compiled, and what is left outside on purpose:
- the controlled U-Net, with the summed control residuals as ordinary graph inputs (zeros when no
  unit acts at a step): one graph serves any number of units, any window and any weight;
- each ControlNet's forward (x, t, text, E(c) -> unscaled residuals).
Weights, masks, strength schedules and the residual sum run eagerly between the two (a few
element-wise products per connection), and the start/end windows are decided in Python before
either graph runs, so changing them never recompiles. Shapes are static (`dynamic=False`): one
graph per (size, batch, guidance on/off), plus one per ControlNet architecture and batch (cond-only
modes run the ControlNet on half the batch). A new size compiles anew; `CompiledModels.stats`
counts every graph dynamo hands its backend and the seconds those compiling calls took.

On CUDA the mode is "reduce-overhead" (inductor + CUDA graphs: the launch-bound loop replayed as
captured graphs); elsewhere inductor's default. The CUDA path is written for and documented, not
measured on this project's CPU machines (docs/performance.md). Units this does not cover
(T2I-Adapters, ControlNet-LLLite's hooks, ControlNet-XS's coupled U-Net) run eagerly.

Where compilation is impossible (no C++ compiler for inductor, a backend that fails) the pipeline
warns once and runs eagerly: same pictures, eager speed.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable, Sequence

import torch

from controlnet.nn.controlled_unet import controlled_unet
from controlnet.nn.residuals import ControlResiduals, sum_residuals

RECOMPILE_LIMIT = 32  # dynamo's default (8) is reached by a few sizes x batches x unit kinds in one session


def default_mode(device: torch.device) -> str | None:
    """CUDA graphs on CUDA (the loop is launch-bound there), inductor's default elsewhere."""
    return "reduce-overhead" if torch.device(device).type == "cuda" else None


@functools.cache
def compile_problem(device_type: str = "cpu") -> str | None:
    """Why torch.compile cannot run on this machine (None: it can), found by compiling a one-line
    function with inductor once per process: inductor needs a working C++ compiler (and Python's
    headers) on the CPU, triton on CUDA."""
    def probe(x):
        return x * 2 + 1

    try:
        x = torch.ones(4, device=device_type)
        if not torch.equal(torch.compile(probe, backend="inductor", dynamic=False)(x), x * 2 + 1):
            return "the compiled probe computed a wrong result"
    except Exception as exc:  # any failure means: no compiled path here
        return _one_line(exc)
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}"


class CompiledModels:
    """The compiled U-Net step and ControlNets of one pipeline, with their compile statistics.

    `backend`/`mode` are `torch.compile`'s (mode None: `default_mode(device)`). If compilation is
    impossible (`compile_problem`) or a compile fails, `failed` holds the reason, a warning says it
    once, and every call runs eagerly from then on."""

    def __init__(self, unet, *, backend: str | Callable = "inductor", mode: str | None = None):
        self.unet = unet
        self.backend = backend
        self.mode = default_mode(unet.device) if mode is None and backend == "inductor" else mode
        self.failed: str | None = None
        self.stats = {"graphs": 0, "compiling_calls": 0, "warmup_s": 0.0, "calls": 0}
        self._controlnets: dict[int, Callable] = {}
        self._zeros: dict[tuple, ControlResiduals] = {}
        self._unet_step = self._compile(self._step)
        if backend == "inductor":
            problem = compile_problem(unet.device.type)
            if problem is not None:
                self._give_up(f"torch.compile is unavailable here ({problem})")

    # ------------------------------------------------------------------ what runs

    def _step(self, sample, t, states, down, mid, added):
        """The controlled U-Net with one (already summed and scaled) residual set: the compiled region."""
        return controlled_unet(self.unet, sample, t, states, [(ControlResiduals(down, mid), None)],
                               added_cond_kwargs=added)

    def predict(self, sample: torch.Tensor, t, states: torch.Tensor, controls: Sequence, added: dict | None) -> torch.Tensor:
        """`controlled_unet(unet, sample, t, states, controls, added_cond_kwargs=added)`, compiled:
        the units' residuals are scaled and summed here, eagerly, and enter the graph as inputs."""
        z = sum_residuals(controls) if controls else self._zero_residuals(sample)
        if self.failed:
            return controlled_unet(self.unet, sample, t, states, [(z, None)], added_cond_kwargs=added)
        t = t if torch.is_tensor(t) else torch.tensor(t, device=sample.device)  # a tensor input: no recompile per step
        return self._run(self._unet_step, self._step, sample, t, states, z.down, z.mid, added)

    def controlnet(self, cn) -> Callable:
        """`cn`'s forward, compiled (once per ControlNet object)."""
        if self.failed:
            return cn
        compiled = self._controlnets.get(id(cn))
        if compiled is None:
            compiled = self._controlnets[id(cn)] = self._compile(cn)
        return functools.partial(self._run, compiled, cn)

    def _run(self, fn, eager, *args, **kwargs):
        """One call of the compiled `fn`; counts the graphs it compiled and how long that took. A
        compile failure switches this pipeline to eager mode with a warning (and runs `eager`)."""
        from torch._dynamo.utils import counters

        if self.mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # earlier steps' outputs were consumed
        before, start = counters["stats"]["unique_graphs"], time.perf_counter()
        try:
            out = fn(*args, **kwargs)
        except torch._dynamo.exc.BackendCompilerFailed as exc:
            self._give_up(f"compiling failed ({_one_line(getattr(exc, 'inner_exception', None) or exc)})")
            return eager(*args, **kwargs)
        if self.mode == "reduce-overhead":  # a CUDA graph's outputs are overwritten by its next replay:
            out = torch.utils._pytree.tree_map(torch.clone, out)  # two same-shaped units share one graph
        self.stats["calls"] += 1
        new = counters["stats"]["unique_graphs"] - before
        if new:
            self.stats["graphs"] += new
            self.stats["compiling_calls"] += 1
            self.stats["warmup_s"] += time.perf_counter() - start
        return out

    # ------------------------------------------------------------------ helpers

    def _compile(self, fn):
        cfg = torch._dynamo.config
        limit = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"  # torch < 2.6
        setattr(cfg, limit, max(getattr(cfg, limit), RECOMPILE_LIMIT))
        options = {"backend": self.backend, "dynamic": False}
        if self.mode is not None:
            options["mode"] = self.mode
        return torch.compile(fn, **options)

    def _zero_residuals(self, sample: torch.Tensor) -> ControlResiduals:
        """All-zero residuals of this sample's shapes (the U-Net's output with them is the plain U-Net's)."""
        from controlnet.nn.controlled_unet import unet_connection_shapes

        key = (tuple(sample.shape), sample.dtype, sample.device)
        if key not in self._zeros:
            shapes = unet_connection_shapes(self.unet, tuple(sample.shape[-2:]))
            zeros = [torch.zeros((sample.shape[0], *s), dtype=sample.dtype, device=sample.device) for s in shapes]
            self._zeros[key] = ControlResiduals(tuple(zeros[:-1]), zeros[-1])
        return self._zeros[key]

    def _give_up(self, reason: str) -> None:
        self.failed = reason
        warnings.warn(f"compile: {reason}; running eagerly (same results, eager speed)", RuntimeWarning, stacklevel=3)

    def summary(self) -> str:
        """One line for logs: graphs compiled, the seconds the compiling calls took, or why eager."""
        if self.failed:
            return f"compile: off ({self.failed})"
        s = self.stats
        return (f"compile: {s['graphs']} graph(s) compiled in {s['compiling_calls']} call(s) taking {s['warmup_s']:.1f} s "
                f"(warm-up), {s['calls']} compiled call(s) in all, mode {self.mode or 'default'}, backend "
                f"{self.backend if isinstance(self.backend, str) else getattr(self.backend, '__name__', 'custom')}")
