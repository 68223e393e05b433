"""`controlnet serve` takes every ControlNet family in --controlnet-dir: Union (union_control_type,
A1111's names), Control-LoRA (built on the served U-Net), T2I-Adapter and ControlNet-XS (the only
unit), each a tiny random file served on a tiny diffusers base of its family."""

from __future__ import annotations

import base64
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

from controlnet.checkpoints import save_controlnet, write_safetensors
from controlnet.tiny import random_control_lora
from serve_tools import CHROMIUM, DRIVER, b64png, body, decode, headless_chrome, running_server
from tiny_models import random_hint, tiny_controlnet, tiny_pipeline, tiny_union

HINT = np.asarray(random_hint(64, 64, seed=1))
ARGS = "alwayson_scripts.controlnet.args"
LLLITE_REFERENCE = Path(__file__).parent / "data" / "lllite_reference.safetensors"


def served(base, controlnets):
    from controlnet.web.engine import Engine

    return Engine(str(base), controlnet_dir=controlnets)


def unit(model: str, **extra) -> dict:
    return {"enabled": True, "image": b64png(HINT), "module": "none", "model": model, **extra}


def post(url: str, *units) -> requests.Response:
    return requests.post(f"{url}/sdapi/v1/txt2img", json=body(units=units))


def first_image(r) -> np.ndarray:
    assert r.status_code == 200, r.text
    return decode(r.json()["images"][0])


@pytest.fixture(scope="module")
def sd1_server(tmp_path_factory):
    """An SD 1.x-shaped tiny base with a plain ControlNet, a Control-LoRA, a T2I-Adapter and a ControlNet-XS."""
    from diffusers import ControlNetXSAdapter, T2IAdapter

    d = tmp_path_factory.mktemp("sd1_families")
    pipe = tiny_pipeline("sd1")
    pipe.save_pretrained(d / "base")
    nets = d / "controlnets"
    tiny_controlnet(pipe, seed=2).save_pretrained(nets / "plain")
    write_safetensors(random_control_lora(pipe.unet, rank=4, seed=5, std=0.1), nets / "control-lora-canny-rank4.safetensors")
    torch.manual_seed(3)
    T2IAdapter(in_channels=3, channels=[32, 64], num_res_blocks=2, downscale_factor=8,
               adapter_type="full_adapter").save_pretrained(nets / "t2i-adapter-canny")
    torch.manual_seed(4)
    xs = ControlNetXSAdapter.from_unet(pipe.unet, size_ratio=0.5, learn_time_embedding=True)
    with torch.no_grad():
        for p in xs.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    xs.save_pretrained(nets / "controlnet-xs-canny")
    xl = tiny_pipeline("sdxl")  # files made for another base
    write_safetensors(random_control_lora(xl.unet, rank=4, seed=6), nets / "control-lora-xl.safetensors")
    T2IAdapter(in_channels=3, channels=[32, 64, 64, 64], num_res_blocks=2, downscale_factor=16,
               adapter_type="full_adapter_xl").save_pretrained(nets / "t2i-adapter-xl")
    with running_server(served=served(d / "base", nets)) as server:
        yield server


@pytest.fixture(scope="module")
def sdxl_server(tmp_path_factory):
    """An SDXL-shaped tiny base with a ProMax union ControlNet (single file), a plain ControlNet and the
    LLLite file of tests/test_lllite.py (made by kohya's sd-scripts for this very U-Net shape)."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("sdxl_union")
    pipe = tiny_pipeline("sdxl")
    pipe.save_pretrained(d / "base")
    save_controlnet(tiny_union(dict(pipe.unet.config), seed=2), d / "nets" / "controlnet-union-sdxl-1.0-promax.safetensors")
    tiny_controlnet(pipe, seed=3).save_pretrained(d / "nets" / "plain-xl")
    lllite = load_file(LLLITE_REFERENCE)
    save_file({k: v for k, v in lllite.items() if k.startswith("lllite_unet_")}, d / "nets" / "controllllite_canny.safetensors")
    with running_server(served=served(d / "base", d / "nets")) as server:
        yield server


def test_every_family_is_listed_and_each_changes_the_picture(sd1_server):
    url, _ = sd1_server
    titles = requests.get(url + "/controlnet/model_list").json()["model_list"]
    names = {t.split(" [")[0] for t in titles}
    assert {"plain", "control-lora-canny-rank4", "t2i-adapter-canny", "controlnet-xs-canny"} <= names
    without = first_image(post(url))
    for name in ("control-lora-canny-rank4", "t2i-adapter-canny", "controlnet-xs-canny"):
        assert not np.array_equal(first_image(post(url, unit(name))), without), name
    both = first_image(post(url, unit("t2i-adapter-canny"), unit("control-lora-canny-rank4")))
    assert not np.array_equal(both, without)


def refused(server, *units) -> dict:
    """The 422 answer to a request with `units`, which queued nothing."""
    url, app = server
    before = len(app.state.service.queue.jobs())
    r = post(url, *units)
    assert r.status_code == 422, r.text
    assert len(app.state.service.queue.jobs()) == before
    return r.json()


def test_controlnet_xs_must_be_the_only_unit(sd1_server):
    answer = refused(sd1_server, unit("plain"), unit("controlnet-xs-canny"))
    assert answer["field"] == f"{ARGS}[1].model"
    assert "ControlNet-XS" in answer["detail"] and "only enabled unit" in answer["detail"]


@pytest.mark.parametrize("model, extra, words", [
    ("control-lora-xl", {}, ["cannot be loaded", "made for"]),
    ("t2i-adapter-xl", {}, ["T2I-Adapter"]),
    ("t2i-adapter-canny", {"control_mode": "ControlNet is more important"}, ["T2I-Adapter", "not a mode"]),
])
def test_what_a_family_refuses_is_a_422_naming_the_unit(sd1_server, model, extra, words):
    r = post(sd1_server[0], unit(model, **extra))
    assert r.status_code == 422, r.text
    assert r.json()["field"].startswith(f"{ARGS}[0]")
    for w in words:
        assert w in r.json()["detail"]


def test_lllite_is_listed_and_steers_alone_and_beside_a_controlnet(sdxl_server):
    url, _ = sdxl_server
    names = {t.split(" [")[0] for t in requests.get(url + "/controlnet/model_list").json()["model_list"]}
    assert "controllllite_canny" in names
    without = first_image(post(url))
    alone = first_image(post(url, unit("controllllite_canny")))
    plain = first_image(post(url, unit("plain-xl")))
    both = first_image(post(url, unit("controllllite_canny"), unit("plain-xl")))
    assert not np.array_equal(alone, without)
    assert not np.array_equal(both, plain) and not np.array_equal(both, alone)


def test_union_control_type_takes_a1111_names_and_is_stored(sdxl_server):
    (url, _), model = sdxl_server, "controlnet-union-sdxl-1.0-promax"
    r = post(url, unit(model, union_control_type="Hard Edge"))
    hard = first_image(r)
    png = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
    assert json.loads(png.text["controlnet"])["units"][0]["control_type"] == "Hard Edge"
    assert "Union Control Type: Hard Edge" in json.loads(r.json()["info"])["extra_generation_params"]["ControlNet 0"]
    assert not np.array_equal(first_image(post(url, unit(model, union_control_type="Depth"))), hard)
    assert np.array_equal(first_image(post(url, unit(model, union_control_type="canny"))), hard)  # the same type
    # A1111 clients send "Unknown" for every unit: a plain ControlNet takes it
    assert post(url, unit("plain-xl", union_control_type="Unknown")).status_code == 200


@pytest.mark.parametrize("model, value, words", [
    ("controlnet-union-sdxl-1.0-promax", None, ["is a union ControlNet", "OpenPose, Depth, Soft Edge, Hard Edge"]),
    ("controlnet-union-sdxl-1.0-promax", "Unknown", ["give the type", "Tile, Inpaint"]),
    ("controlnet-union-sdxl-1.0-promax", "Bogus", ["unknown control type 'Bogus'", "Segmentation"]),
    ("controlnet-union-sdxl-1.0-promax", 3, ["must be a control type name", "Normal Map"]),
    ("plain-xl", "Canny", ["for union ControlNets", "plain-xl is not one"]),
])
def test_union_control_type_errors_name_the_field(sdxl_server, model, value, words):
    extra = {} if value is None else {"union_control_type": value}
    answer = refused(sdxl_server, unit(model, **extra))
    assert answer["field"] == f"{ARGS}[0].union_control_type"
    for w in words:
        assert w in answer["detail"]


def test_page_lists_the_union_under_its_control_types(sdxl_server):
    url, _ = sdxl_server
    config = requests.get(url + "/config").json()
    union = next(t for t in requests.get(url + "/controlnet/model_list").json()["model_list"] if "union" in t)
    assert config["union_models"] == [union]
    assert (config["union_types"]["Canny"], config["union_types"]["Depth"]) == ("Hard Edge", "Depth")
    types = requests.get(url + "/controlnet/control_types").json()["control_types"]
    assert union in types["Depth"]["model_list"] and union in types["Canny"]["model_list"]
    assert not any(t.startswith("plain-xl") for t in types["Depth"]["model_list"])


def test_the_page_sends_the_control_types_union_type(sdxl_server):
    """The page's unit with a union model sends the union type of its Control Type, none for a plain one."""
    pytest.importorskip("selenium.webdriver", reason="the serve extra is not installed (selenium)")
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    url, _ = sdxl_server
    with headless_chrome() as driver:
        driver.get(url + "/")
        _until(driver, lambda d: d.execute_script("return document.body.dataset.ready") == "1")

        def args(control_type: str, model_prefix: str) -> dict:
            return driver.execute_async_script("""
                const [type, prefix, done] = arguments, select = (id, v) => {
                  const el = document.getElementById(id); el.value = v; el.dispatchEvent(new Event("change")); };
                select("unit0-type", type);
                select("unit0-model", [...document.getElementById("unit0-model").options].map((o) => o.value)
                  .find((v) => v.startsWith(prefix)));
                unitArgs(0).then(done);""", control_type, model_prefix)

        assert args("Depth", "controlnet-union")["union_control_type"] == "Depth"
        assert args("Canny", "controlnet-union")["union_control_type"] == "Hard Edge"
        assert "union_control_type" not in args("All", "plain-xl")


def _until(driver, predicate, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(predicate)
