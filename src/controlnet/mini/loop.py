"""One training stage: time-budgeted, checkpointed, resumable, with tqdm progress.

The step count is fixed once, from the measured time of the first steps and the stage's share of
the time budget (capped by max_steps), and stored with the checkpoint, so a resumed stage keeps
the same learning-rate schedule. Batches are a function of the step number, so a resumed run sees
the data an uninterrupted one would have seen.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from controlnet.files import write_json
from controlnet.mini.checkpoint import atomic_save, load

CALIBRATION_STEPS = 4


@dataclass
class Stage:
    """What a stage trains and how; `step(step) -> {name: loss tensor}`, the first entry is minimised."""

    name: str
    folder: Path
    modules: dict[str, torch.nn.Module]
    step: Callable[[int], dict[str, torch.Tensor]]
    lr: float
    max_steps: int
    budget_s: float
    warmup_steps: int = 100
    ema_decay: float = 0.0  # 0: no EMA copies
    checkpoint_every_s: float = 300.0
    on_checkpoint: Callable[[int, dict[str, torch.nn.Module]], None] | None = None  # e.g. sample grids
    ema: dict[str, torch.nn.Module] = field(default_factory=dict)

    @property
    def state_path(self) -> Path:
        return self.folder / "state.pt"

    @property
    def done_path(self) -> Path:
        return self.folder / "done.json"

    def final_modules(self) -> dict[str, torch.nn.Module]:
        """The weights to keep: the EMA copies where there are some."""
        return {k: self.ema.get(k, m) for k, m in self.modules.items()}


@dataclass
class _Progress:
    """Where a stage stands: steps done, planned total (None until calibrated), training seconds,
    running losses (restarted by each process)."""

    step: int = 0
    total: int | None = None
    elapsed: float = 0.0
    losses: dict[str, float] = field(default_factory=dict)


def run_stage(stage: Stage, progress: bool = True) -> dict:
    """Train (or resume, or skip if done) a stage; returns its report {steps, seconds, loss}."""
    params = [p for m in stage.modules.values() for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=stage.lr, weight_decay=0.0)
    if stage.ema_decay:
        stage.ema = {k: copy.deepcopy(m).requires_grad_(False) for k, m in stage.modules.items()}
    run = _restore(stage, optimizer)
    if stage.done_path.exists():
        return load_report(stage)
    for m in stage.modules.values():
        m.train()
    bar = tqdm(total=run.total or stage.max_steps, initial=run.step, desc=stage.name, disable=not progress,
               dynamic_ncols=True)
    last_save = time.perf_counter()
    start, timed = run.step, 0.0
    while run.total is None or run.step < run.total:
        t0 = time.perf_counter()
        out = _train_step(stage, optimizer, params, run)
        run.step += 1
        dt = time.perf_counter() - t0
        run.elapsed += dt
        timed += dt if run.step > start + 1 else 0.0  # the first step of a process warms up, untimed
        for k, v in out.items():
            run.losses[k] = 0.98 * run.losses.get(k, v.item()) + 0.02 * v.item()
        _plan_total(stage, run, start, timed, bar)
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in run.losses.items()}, refresh=False)
        if time.perf_counter() - last_save > stage.checkpoint_every_s and run.step < (run.total or stage.max_steps):
            _save(stage, optimizer, run)
            last_save = time.perf_counter()
    bar.close()
    _save(stage, optimizer, run, final=True)
    return load_report(stage)


def _restore(stage: Stage, optimizer) -> _Progress:
    """The checkpoint's weights, EMA copies and optimizer state, and where it stopped (if any)."""
    if not stage.state_path.exists():
        return _Progress()
    state = load(stage.state_path)
    for k, m in stage.modules.items():
        m.load_state_dict(state["modules"][k])
    for k, m in stage.ema.items():
        m.load_state_dict(state["ema"][k])
    optimizer.load_state_dict(state["optimizer"])
    return _Progress(state["step"], state["total_steps"], state["elapsed_s"])


def _train_step(stage: Stage, optimizer, params: list, run: _Progress) -> dict[str, torch.Tensor]:
    """One optimizer step at the scheduled learning rate (warm-up, then cosine down to 10%), then EMA."""
    lr = stage.lr * min(1.0, (run.step + 1) / max(1, stage.warmup_steps))
    lr *= 0.55 + 0.45 * math.cos(math.pi * run.step / (run.total or stage.max_steps))
    for group in optimizer.param_groups:
        group["lr"] = lr
    out = stage.step(run.step)
    loss = next(iter(out.values()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    if stage.ema:
        decay = min(stage.ema_decay, (1 + run.step) / (10 + run.step))
        with torch.no_grad():
            for k, ema in stage.ema.items():
                for pe, p in zip(ema.parameters(), stage.modules[k].parameters()):
                    pe.lerp_(p, 1 - decay)
    return out


def _plan_total(stage: Stage, run: _Progress, start: int, timed: float, bar) -> None:
    """Fix the step count once: from the timed calibration steps and the budget, capped by max_steps."""
    if run.total is None and run.step == start + CALIBRATION_STEPS + 1:
        per_step = timed / CALIBRATION_STEPS
        run.total = max(run.step, min(stage.max_steps, int(stage.budget_s / per_step)))
        bar.total = run.total
        bar.refresh()
    elif run.total is None and run.step >= stage.max_steps:
        run.total = run.step


def _save(stage: Stage, optimizer, run: _Progress, final: bool = False) -> None:
    """Checkpoint (atomically), show samples, and on the last step write the stage's report."""
    atomic_save({"modules": {k: m.state_dict() for k, m in stage.modules.items()},
                 "ema": {k: m.state_dict() for k, m in stage.ema.items()},
                 "optimizer": optimizer.state_dict(), "step": run.step, "total_steps": run.total,
                 "elapsed_s": run.elapsed}, stage.state_path)
    if stage.on_checkpoint:
        stage.on_checkpoint(run.step, stage.final_modules())
    if final:
        report = {"stage": stage.name, "steps": run.step, "seconds": round(run.elapsed, 1),
                  **{k: round(v, 5) for k, v in run.losses.items()}}
        write_json(stage.done_path, report)


def load_report(stage: Stage) -> dict:
    import json

    return json.loads(stage.done_path.read_text())


def load_final(stage: Stage) -> None:
    """Load a finished stage's weights (EMA where kept) into `stage.modules`."""
    state = load(stage.state_path)
    for k, m in stage.modules.items():
        m.load_state_dict(state["ema"].get(k) or state["modules"][k])
