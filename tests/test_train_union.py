"""`controlnet train --union`: one union ControlNet for several condition kinds, a control type per
sample (the data's `control_type` column), on the tiny random base model with a few steps."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bad_input_tools import assert_user_error
from controlnet.errors import InputError
from controlnet.training import TrainConfig, make_fill50k, make_tiny_base, train

RES = 16


def typed_fill50k(root, types, n=12, seed=0):
    """A fill50k folder whose rows carry `control_type`, cycling through `types` (None: no column)."""
    data = make_fill50k(root, n=n, size=32, seed=seed)
    rows = [json.loads(line) for line in (data / "prompt.json").read_text().splitlines()]
    for i, row in enumerate(rows):
        if types[i % len(types)] is not None:
            row["control_type"] = types[i % len(types)]
    (data / "prompt.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return data


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("union")
    base = make_tiny_base(root / "base")
    edges = typed_fill50k(root / "edges", ["canny"], seed=1)
    depth = typed_fill50k(root / "depth", ["depth"], seed=2)
    return root, str(base), [str(edges), str(depth)]


def config(world, out, **kw):
    root, base, data = world
    settings = dict(base_model=base, data=data, output_dir=str(root / out), resolution=RES, batch_size=4,
                    learning_rate=1e-3, max_steps=6, checkpoint_every=1000, report_to="none", progress=False,
                    seed=0, union=True, adam_weight_decay=0.0)
    settings.update(kw)
    return TrainConfig(**settings)


def weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "diffusion_pytorch_model.safetensors"))


def test_union_learns_the_types_it_sees_and_only_those(world):
    """Two folders (canny, depth): the saved network is a union whose task embedding moved in the rows
    of canny (3) and depth (1) only; without decay the other rows keep their initial values."""
    from controlnet.checkpoints import load_controlnet
    from controlnet.nn.union import UnionControlNet
    from controlnet.training import load_base

    result = train(config(world, "learn"))
    trained = load_controlnet(result.output_dir)
    assert isinstance(trained, UnionControlNet) and trained.config.num_control_type == 6
    torch.manual_seed(0)  # the trainer's init: the same seed, the same draws
    fresh = UnionControlNet.from_unet(load_base(world[1]).unet, vae_scale_factor=2)
    moved = (trained.task_embedding - fresh.task_embedding).abs().amax(dim=1)
    assert moved[[1, 3]].min() > 1e-4, moved
    assert torch.equal(moved[[0, 2, 4, 5]], torch.zeros(4)), moved
    assert (trained.spatial_ch_projs.weight.abs().max() > 0) and not torch.equal(
        trained.control_add_embedding.linear_1.weight, fresh.control_add_embedding.linear_1.weight)


def test_union_resume_follows_the_uninterrupted_run(world):
    full = train(config(world, "full", checkpoint_every=3, keep_checkpoints=5))
    killed = full.output_dir.parent / "killed"
    (killed / "checkpoints").mkdir(parents=True)
    shutil.copytree(full.output_dir / "checkpoints" / "step-000003", killed / "checkpoints" / "step-000003")
    resumed = train(config(world, "killed", resume="latest", checkpoint_every=3))
    assert [r["step"] for r in resumed.log] == [4, 5, 6]
    a, b = weights(full.output_dir), weights(resumed.output_dir)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    losses = {r["step"]: r["loss"] for r in full.log}
    assert all(r["loss"] == pytest.approx(losses[r["step"]], abs=1e-6) for r in resumed.log)


def test_a_union_controlnet_continues_and_needs_enough_type_slots(world, capsys):
    """Starting from a union file is union training without --union; data with a type its slots lack
    (repaint is ProMax's 8th) is refused before step 1, as is --union on a plain ControlNet."""
    root, base, data = world
    first = train(config(world, "first", max_steps=1)).output_dir
    again = train(config(world, "again", max_steps=1, union=False, controlnet=str(first)))
    assert "task_embedding" in weights(again.output_dir)
    repaint = typed_fill50k(root / "repaint", ["repaint"], n=4)
    common = ["train", "--base-model", base, "--resolution", str(RES), "--report-to", "none", "--no-progress",
              "--max-steps", "1"]
    assert_user_error([*common, "--data", str(repaint), "--controlnet", str(first), "--output-dir", str(root / "r")],
                      capsys, "--controlnet", "repaint", "6 types")
    plain = train(config(world, "plain", max_steps=1, union=False)).output_dir
    assert_user_error([*common, "--data", data[0], "--union", "--controlnet", str(plain), "--output-dir",
                       str(root / "p")], capsys, "--union", "plain ControlNet")
    assert not (root / "r").exists() or not any((root / "r").rglob("*.safetensors"))


def test_union_data_without_a_known_type_is_refused(world, capsys):
    root, base, _ = world
    unknown = typed_fill50k(root / "unknown", ["canny", "normals2"], n=4)
    untyped = typed_fill50k(root / "untyped", ["canny", None], n=4)
    common = ["train", "--base-model", base, "--resolution", str(RES), "--report-to", "none", "--no-progress",
              "--max-steps", "1", "--union"]
    assert_user_error([*common, "--data", str(unknown), "--output-dir", str(root / "u")], capsys,
                      "control_type", "'normals2' is unknown", "sample 1")
    assert_user_error([*common, "--data", str(untyped), "--output-dir", str(root / "n")], capsys,
                      "sample 1", "no control_type")
    assert_user_error([*common, "--data", str(untyped), "--output-dir", str(root / "v"), "--validation-images",
                       str(untyped / "source" / "0.png")], capsys, "--validation-images", "union")


def test_a_row_of_a_mixed_batch_equals_that_row_alone():
    """The per-row union forward (a type per sample, as training feeds it) gives each row what the
    ordinary forward gives for that row alone with its one hint and type (as sampling runs it)."""
    from controlnet.nn.union import UnionControlNet
    from controlnet.training.base import build_base

    base = build_base("tiny")
    torch.manual_seed(0)
    cn = UnionControlNet.from_unet(base.unet, vae_scale_factor=base.vae_scale_factor)
    with torch.no_grad():
        for p in cn.parameters():  # leave the zero layers' zeros: every path then matters
            p.add_(0.05 * torch.randn_like(p))
    c = base.unet.config
    sample, ehs = torch.randn(3, c.in_channels, 8, 8), torch.randn(3, 5, c.cross_attention_dim)
    t, hint, types = torch.tensor([10, 500, 900]), torch.rand(3, 3, 16, 16), torch.tensor([3, 5, 1])
    with torch.no_grad():
        rows = cn(sample, t, ehs, hint, control_types=types)
        for i in range(3):
            alone = cn(sample[i:i + 1], t[i:i + 1], ehs[i:i + 1], hint[i:i + 1], control_types=[int(types[i])])
            for a, b in zip((*rows.down, rows.mid), (*alone.down, alone.mid)):
                assert torch.allclose(a[i:i + 1], b, atol=1e-5)
        other = cn(sample, t, ehs, hint, control_types=torch.tensor([3, 3, 1]))
    assert not torch.allclose(other.mid[1], rows.mid[1], atol=1e-3)  # the type does change the output
    with pytest.raises(InputError, match="out of range"):
        cn(sample, t, ehs, hint, control_types=torch.tensor([3, 6, 1]))


def test_streamed_samples_carry_their_type_from_an_entry_or_the_json():
    from controlnet.training.control_types import batch_types
    from controlnet.training.data import _wds_control_type

    assert _wds_control_type({"control_type": b"depth\n"}) == "depth"
    assert _wds_control_type({"json": b'{"control_type": "seg", "text": "x"}'}) == "seg"
    assert _wds_control_type({"json": b"not json"}) is None and _wds_control_type({}) is None
    assert batch_types(["edges", "seg", "depth", "3"], 6).tolist() == [3, 5, 1, 3]
    with pytest.raises(InputError, match="no control_type"):
        batch_types(["canny", None], 6)
    with pytest.raises(InputError, match="repaint"):
        batch_types(["repaint"], 6)
