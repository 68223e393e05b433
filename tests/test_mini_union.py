"""The shipped `mini:union`: one ControlNet, told its condition by the unit's control type, draws
each of the built-in world's three conditions clearly better than the same prompts and seeds
without control (held-out world samples, the recommended CFG and weight, few steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from controlnet.assets import HELD_OUT_SEED, MINI_DIR, available_controlnets

installed = pytest.mark.skipif("union" not in available_controlnets(union=True),
                               reason="the built-in union ControlNet is not installed")

# metric, and how much better than no control the union must be. The margins are a fraction of the
# gaps measured at n = 48 (docs/mini.md), far above any float rounding between machines.
CHECKS = {"edges": ("edge_f1", +0.15), "seg": ("label_accuracy", +0.08), "depth": ("depth_rmse", -20.0)}


@pytest.fixture(scope="module")
def pipe():
    from controlnet.pipeline import ControlPipeline

    torch.set_num_threads(1)
    return ControlPipeline.from_pretrained(MINI_DIR)


def _score(pipe, kind, samples, union=None):
    """The mean metric over `samples`, one picture per pass (a union's condition layer attends across
    batch rows, docs/families.md), seed i for sample i."""
    from controlnet.metrics.world import world_scores
    from controlnet.pipeline import ControlUnit

    values = []
    for i, s in enumerate(samples):
        units = [ControlUnit(union, s.conditions[kind], weight=2.0, control_type=kind)] if union is not None else []
        image = pipe(s.caption, units=units, steps=8, guidance_scale=2.0, seed=i, width=64, height=64,
                     output_type="np", progress=False).images[0]
        values.append(world_scores(kind, (np.asarray(image) * 255).round().astype(np.uint8), s)[CHECKS[kind][0]][0])
    return float(np.mean(values))


@installed
@pytest.mark.parametrize("kind", ["edges", "seg", "depth"])
def test_the_shipped_union_controls_each_condition_by_its_type(pipe, kind):
    from controlnet.assets import resolve_controlnet
    from controlnet.checkpoints import load_controlnet
    from controlnet.world.world import World

    union = load_controlnet(resolve_controlnet("mini:union"))
    samples = list(World(seed=HELD_OUT_SEED, size=64, conditions=(kind,)).take(6, start=20_000))
    controlled, plain = _score(pipe, kind, samples, union), _score(pipe, kind, samples)
    margin = CHECKS[kind][1]
    assert (controlled - plain) * np.sign(margin) > abs(margin), (kind, controlled, plain)


@installed
def test_the_built_in_weights_stay_within_25_mb_and_the_union_within_its_share():
    """Issue 20's budget: every built-in file together at most 25 MB; the union at most 3.3 MB of it."""
    def size(folder):
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    assert size(MINI_DIR) <= 25_000_000, size(MINI_DIR)
    assert size(MINI_DIR / "controlnet-union") <= 3_300_000
