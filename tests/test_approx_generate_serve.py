"""The approximate sampling modes (controlnet.pipeline.reuse) from `controlnet generate` and from the
server's `approx` field: they change the picture as the API's `approx=` does, are stored in the PNG
(so `--from` replays them), are refused with the field named when bad, and on transformer bases."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests
from PIL import Image

from bad_input_tools import assert_user_error
from serve_tools import body, running_server, unit
from tiny_models import random_hint, save_base_and_controlnet

W = H = 64
STEPS = ["--steps", "4", "--cfg", "5", "--scheduler", "ddim", "--seed", "3"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("approx_generate")
    save_base_and_controlnet(d)
    random_hint(W, H).save(d / "hint.png")
    return d


def generate(files, out, *extra, replay=None) -> Image.Image:
    from controlnet.cli import main

    given = ["--from", str(replay)] if replay else ["--model", str(files / "base"), "--controlnet", str(files / "cn"),
                                                     "--image", str(files / "hint.png"), *STEPS]
    assert main(["generate", *given, "--no-grid", "-o", str(out), *extra]) == 0
    (png,) = sorted(out.glob("0*.png"))
    return Image.open(png)


def test_generate_samples_with_the_modes_stores_them_and_replays_them(files, tmp_path):
    exact = generate(files, tmp_path / "exact")
    approx = generate(files, tmp_path / "approx", "--deepcache", "2", "--control-reuse", "2", "--control-cond-only")
    assert "approx" not in json.loads(exact.info["controlnet"]) or json.loads(exact.info["controlnet"])["approx"] is None
    stored = json.loads(approx.info["controlnet"])["approx"]
    assert stored == {"control_reuse": 2, "control_cond_only": True, "deepcache": 2}
    assert not np.array_equal(np.asarray(exact), np.asarray(approx))  # the deep blocks were skipped
    identity = generate(files, tmp_path / "identity", "--deepcache", "1", "--control-reuse", "1")
    assert np.array_equal(np.asarray(identity), np.asarray(exact))  # identity values: the exact sampler
    png = sorted((tmp_path / "approx").glob("0*.png"))[0]
    replayed = generate(files, tmp_path / "replay", replay=png)
    assert np.array_equal(np.asarray(replayed), np.asarray(approx))


@pytest.mark.parametrize("argv, fragment", [
    (["--deepcache", "0"], "deepcache"),
    (["--control-reuse", "-1"], "control_reuse"),
    (["--control-reuse", "2", "--control-reuse-from", "1.5"], "control_reuse_from"),
])
def test_generate_refuses_bad_modes_before_loading_anything(files, tmp_path, capsys, argv, fragment):
    assert_user_error(["generate", "--model", str(files / "base"), "--controlnet", str(files / "cn"), "--image",
                       str(files / "hint.png"), "-o", str(tmp_path), *argv], capsys, fragment)
    assert not list(tmp_path.glob("*.png"))


def test_generate_refuses_the_modes_on_a_transformer_base(tmp_path, capsys):
    assert_user_error(["generate", "--model", "mini-dit", "--controlnet", "mini-dit:edges", "--image",
                       str(tmp_path / "any.png"), "--deepcache", "2", "-o", str(tmp_path)], capsys, "U-Net base", "deepcache")


@pytest.fixture(scope="module")
def server():
    with running_server() as (url, _app):
        yield url


def post(url, **extra) -> requests.Response:
    return requests.post(f"{url}/sdapi/v1/txt2img", json=body(steps=4, units=[unit()], **extra))


def picture(r) -> tuple[np.ndarray, dict]:
    assert r.status_code == 200, r.text
    im = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    return np.asarray(im.convert("RGB")), json.loads(im.info["controlnet"])


def test_the_server_takes_the_modes_and_stores_them(server):
    exact, exact_params = picture(post(server))
    approx, params = picture(post(server, approx={"deepcache": 2, "control_reuse": 1}))
    assert exact_params.get("approx") is None and params["approx"] == {"deepcache": 2}
    assert not np.array_equal(exact, approx)
    same, _ = picture(post(server, approx={"deepcache": 1}))  # identity values: exact
    assert np.array_equal(same, exact)


@pytest.mark.parametrize("value, words", [
    ({"deepcache": 0}, "deepcache"),
    ({"control_reuse": "two"}, "control_reuse"),
    ({"control_cond_only": 1}, "control_cond_only"),
    ({"deep_cache": 2}, "unknown field 'deep_cache'"),
    ([2], "must be an object"),
])
def test_the_server_refuses_bad_modes_naming_the_field(server, value, words):
    r = post(server, approx=value)
    assert r.status_code == 422, r.text
    said = json.dumps(r.json())
    assert "approx" in said and words in said, said


@pytest.mark.parametrize("stored, fragment", [([2], "approx is not an object"), ({"deepcache": 0}, "deepcache")])
def test_a_replay_refuses_damaged_stored_modes(files, tmp_path, capsys, stored, fragment):
    from PIL.PngImagePlugin import PngInfo

    made = generate(files, tmp_path / "made", "--deepcache", "2")
    params = json.loads(made.info["controlnet"])
    info = PngInfo()
    info.add_text("controlnet", json.dumps({**params, "approx": stored}))
    damaged = tmp_path / "damaged.png"
    made.save(damaged, pnginfo=info)
    before = damaged.read_bytes()
    assert_user_error(["generate", "--from", str(damaged), "-o", str(tmp_path / "out")], capsys, fragment)
    assert damaged.read_bytes() == before and not list((tmp_path / "out").glob("*.png"))
