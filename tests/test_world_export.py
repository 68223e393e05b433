"""Exports in the fill50k and image-folder layouts load back as the samples they came from."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from controlnet.errors import InputError, MissingFileError
from controlnet.world import CONDITIONS, World, export, read_export


@pytest.mark.parametrize("layout,condition,index_file,columns", [
    ("fill50k", "edges", "prompt.json", ("source", "target", "prompt")),
    ("imagefolder", "seg", "metadata.jsonl", ("image", "conditioning_image", "text", "control_type")),
])
def test_export_loads_back(tmp_path, layout, condition, index_file, columns):
    out = export(tmp_path / layout, 12, layout, condition, seed=5, start=3, progress=False)
    lines = (out / index_file).read_text().splitlines()
    assert len(lines) == 12
    assert tuple(json.loads(lines[0])) == columns
    world = World(seed=5)
    rows = read_export(out)
    truths = [json.loads(line) for line in (out / "truth.jsonl").read_text().splitlines()]
    for i, (row, truth) in enumerate(zip(rows, truths)):
        sample = world[3 + i]
        assert row["text"] == sample.caption == truth["caption"]
        assert np.array_equal(np.asarray(Image.open(row["image"]).convert("RGB")), sample.image)
        assert np.array_equal(np.asarray(Image.open(row["condition"]).convert("RGB")), sample.conditions[condition])
    assert json.loads((out / "world.json").read_text())["condition"] == condition


def test_export_refuses_bad_input(tmp_path):
    with pytest.raises(InputError):
        export(tmp_path / "a", 3, layout="webdataset", progress=False)
    with pytest.raises(InputError):
        export(tmp_path / "a", 3, condition="normals", progress=False)
    export(tmp_path / "b", 2, progress=False)
    with pytest.raises(InputError):
        export(tmp_path / "b", 2, progress=False)
    with pytest.raises(MissingFileError):
        read_export(tmp_path / "nothing")


def _cli(argv):
    from controlnet.cli import world

    parser = argparse.ArgumentParser(prog="controlnet")
    world.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_export_and_show(tmp_path, capsys):
    assert _cli(["world", "export", str(tmp_path / "d"), "--n", "5", "--layout", "imagefolder",
                 "--condition", "depth", "--seed", "2"]) == 0
    assert len(read_export(tmp_path / "d")) == 5
    assert _cli(["world", "show", str(tmp_path / "grid.png"), "--n", "3", "--scale", "1"]) == 0
    grid = Image.open(tmp_path / "grid.png")
    columns = 1 + len(CONDITIONS)  # the picture, then every condition map (inpaint's masked region shown)
    assert grid.height == 3 * 64 + 2 * 2 and grid.width == columns * 64 + (columns - 1) * 2
    assert "columns: picture | edges" in capsys.readouterr().out
    with pytest.raises(InputError):
        _cli(["world", "show", str(tmp_path / "x.png"), "--min-shapes", "3", "--max-shapes", "2"])
