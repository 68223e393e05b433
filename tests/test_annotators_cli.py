"""`controlnet annotate` and `controlnet annotators` through the real dispatcher."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

import controlnet.cli as cli
from controlnet.annotators import annotate


@pytest.fixture
def run(monkeypatch):
    if "annotate" not in cli.COMMANDS:  # until the dispatcher lists the module itself
        monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, "annotate"])
    return cli.main


@pytest.fixture
def photo(tmp_path):
    path = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


def test_annotate_writes_the_same_map_as_the_api(run, photo, tmp_path, capsys):
    out = tmp_path / "maps" / "edges.png"
    code = run(["annotate", "canny", str(photo), "-o", str(out), "--param", "low_threshold=50", "--resolution", "256"])
    assert code == 0 and "wrote" in capsys.readouterr().out
    written = np.array(Image.open(out))
    assert np.array_equal(written, annotate("canny", data.chelsea(), resolution=256, low_threshold=50))


def test_annotate_sizes_and_inpaint_alpha(run, photo, tmp_path):
    mask = tmp_path / "mask.png"
    m = np.zeros(data.chelsea().shape[:2], np.uint8)
    m[50:150, 100:200] = 255
    Image.fromarray(m).save(mask)
    out = tmp_path / "inpaint.png"
    assert run(["annotate", "inpaint", str(photo), "-o", str(out), "--param", f"mask={mask}"]) == 0
    rgba = np.array(Image.open(out))
    assert rgba.shape[2] == 4 and np.array_equal(rgba[:, :, 3], m)
    out2 = tmp_path / "small.png"
    assert run(["annotate", "color", str(photo), "-o", str(out2), "--width", "128", "--pixel-perfect"]) == 0
    assert Image.open(out2).size == (128, round(300 * 128 / 451))  # aspect kept from --width


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["annotate", "cany", "{photo}", "-o", "{out}"], "unknown annotator 'cany'"),
        (["annotate", "canny", "{photo}", "-o", "{out}", "--param", "sigma=3"], "no parameter sigma"),
        (["annotate", "canny", "{photo}", "-o", "{out}", "--param", "sigma"], "KEY=VALUE"),
        (["annotate", "canny", "missing.png", "-o", "{out}"], "image file not found"),
        (["annotate", "depth", "{photo}", "-o", "{out}", "--param", "model=nowhere"], "model folder not found"),
        (["annotate", "canny", "{photo}", "-o", "{tmp}/x.unknownext"], "unknown image suffix"),
    ],
)
def test_errors_are_one_line(run, photo, tmp_path, capsys, argv, message):
    argv = [a.format(photo=photo, out=tmp_path / "o.png", tmp=tmp_path) for a in argv]
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("controlnet annotate: error:")


def test_annotators_listing(run, capsys):
    assert run(["annotators"]) == 0
    text = capsys.readouterr().out
    assert "canny" in text and "--param low_threshold=100" in text and "REQUIRED" in text
    assert run(["annotators", "--json"]) == 0
    listed = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    mlsd = {p["name"]: p for p in listed["mlsd"]["params"]}
    assert mlsd["value_threshold"] == {
        "name": "value_threshold", "default": 0.1, "type": "float", "required": False,
        "help": mlsd["value_threshold"]["help"],
    }
    assert mlsd["model"]["type"] == "path" and not mlsd["model"]["required"]  # M-LSD's weights are optional here
    assert listed["depth"]["learned"] and "depth" in listed["depth"]["feeds"]
