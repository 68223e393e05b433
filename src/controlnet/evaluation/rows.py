"""A row's pictures: the evaluation's shared context, and sampling a row (cached pictures read,
missing ones sampled in runs of consecutive seeds). Used by `run` and `score`, below both."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controlnet.evaluation.settings import EvalSettings

UNCONTROLLED = "no control"


@dataclass
class Context:
    pipe: object
    data: object
    items: list
    settings: EvalSettings
    cache_root: Path
    model: dict
    progress: bool
    folders: dict  # label -> the pictures of an --images row
    aesthetic: list | None = None  # the aesthetic head's layers (with the CLIP model of `clip`)
    models_dir: Path | None = None  # the detectors' weights for the ControlNet++ protocol figures


def generate_row(ctx: Context, cn, kind: str | None, prompts: list[str], cache, bar=None) -> list[np.ndarray]:
    """The row's n pictures: cached ones read, missing ones sampled in runs of consecutive seeds."""
    from controlnet.pipeline import ControlUnit

    s = ctx.settings
    seeds = [s.seed + i for i in range(s.n)]
    missing = cache.missing(seeds)
    union = {"control_type": kind} if cn is not None and cn.config.get("num_control_type") else {}  # its type: the row's kind
    # a union's condition layer attends across batch rows (docs/families.md): one picture per pass, as trained
    for run in _runs(missing, 1 if union else s.batch):
        idx = [seed - s.seed for seed in run]
        unit = getattr(ctx.pipe, "make_unit", ControlUnit)  # a transformer base's pipe has its own
        units = [unit(cn, [ctx.items[i].conditions[kind] for i in idx], weight=s.weight, mode=s.mode,
                      resize="crop_and_resize", **union)] if cn is not None else []
        size = ctx.data.size
        images = ctx.pipe([prompts[i] for i in idx], units=units, steps=s.steps, guidance_scale=s.guidance_scale,
                          scheduler=s.scheduler, seed=run[0], width=size, height=size, output_type="np",
                          progress=False, approx=s.approx or None).images
        for seed, img in zip(run, images):
            cache.put(seed, (np.asarray(img) * 255).round().clip(0, 255).astype(np.uint8))
        if bar is not None:
            bar.update(len(run))
    if bar is not None:
        bar.update(len(seeds) - len(missing))
    return [cache.get(seed) for seed in seeds]


def _runs(seeds: list[int], batch: int) -> list[list[int]]:
    """Consecutive seeds in runs of at most `batch` (a batch's image k uses the first seed + k)."""
    runs: list[list[int]] = []
    for seed in seeds:
        if runs and runs[-1][-1] == seed - 1 and len(runs[-1]) < batch:
            runs[-1].append(seed)
        else:
            runs.append([seed])
    return runs
