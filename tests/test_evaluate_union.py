"""`controlnet evaluate` rows of a union ControlNet: `KIND=PATH` (or `KIND=mini:union`) gives it the
row's kind as its control type, one picture per pass (its condition layer attends across batch rows)."""

from __future__ import annotations

import json

import pytest
import torch

from bad_input_tools import assert_user_error


@pytest.fixture(scope="module")
def union_file(tmp_path_factory):
    """A union ControlNet copied from the built-in U-Net (random union layers, zero connections)."""
    from controlnet.checkpoints import save_controlnet
    from controlnet.nn.union import UnionControlNet
    from controlnet.training import load_base

    torch.manual_seed(0)
    cn = UnionControlNet.from_unet(load_base("mini").unet, vae_scale_factor=8)
    return save_controlnet(cn, tmp_path_factory.mktemp("union") / "u")


def test_each_union_row_gets_its_kind_as_control_type(union_file, tmp_path, monkeypatch):
    from controlnet.cli import main
    from controlnet.nn.union import UnionControlNet

    seen = []
    original = UnionControlNet.embed_conditions

    def recording(self, hints, types, scales=None):
        seen.append((tuple(types), hints[0].shape[0]))
        return original(self, hints, types, scales)

    monkeypatch.setattr(UnionControlNet, "embed_conditions", recording)
    out = tmp_path / "out"
    assert main(["evaluate", "--model", "mini", "--steps", "2", "--no-fid", "--n", "2", "--data", "world",
                 "--controlnet", f"edges={union_file}", "--controlnet", f"depth={union_file}", "-o", str(out)]) == 0
    assert sorted(set(seen)) == [((1,), 1), ((3,), 1)]  # depth and canny (edges), one picture per pass
    rows = {(r["condition"], r["row"]) for r in json.loads((out / "metrics.json").read_text())["records"]}
    assert {("edges", f"edges={union_file}"), ("depth", f"depth={union_file}")} <= rows


def test_a_union_row_of_a_kind_it_has_no_type_for_is_one_line(union_file, tmp_path, capsys):
    assert_user_error(["evaluate", "--model", "mini", "--steps", "2", "--no-fid", "--n", "2", "--data", "world",
                       "--controlnet", f"outline={union_file}", "-o", str(tmp_path / "o")], capsys, "outline")
