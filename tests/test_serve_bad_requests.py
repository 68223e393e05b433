"""`controlnet serve`: each bad request gets the right status and a message naming the field,
and nothing is queued for it."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import requests

from bad_input_tools import assert_user_error
from serve_tools import b64png, body, running_server, square, unit


@pytest.fixture(scope="module")
def server():
    from controlnet.web import Limits

    limits = Limits(queue_size=1, max_body_mb=1.0, max_input_pixels=256 * 256, max_batch=4, max_side=512)
    with running_server(limits, auth={"alice": "s3cret"}) as (url, app):
        yield url, app


AUTH = ("alice", "s3cret")


def _post(url, path, payload=None, data=None):
    return requests.post(url + path, json=payload, data=data, auth=AUTH,
                         headers={"Content-Type": "application/json"} if data is not None else None)


def _big_png(side: int) -> str:
    """A PNG of side×side pixels that compresses to almost nothing."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _unit_body(**fields):
    return body(units=[{**unit(), **fields}])


# (request body, status, words the message must contain, field)
CASES = {
    "malformed JSON": (b"{not json", 422, ["not valid json"], "body"),
    "body not an object": ([1, 2], 422, ["json object"], "body"),
    "malformed base64": (_unit_body(image="@@@not-base64@@@"), 422, ["not valid base64"], "alwayson_scripts.controlnet.args[0].image"),
    "base64 of a non-image": (_unit_body(image=base64.b64encode(b"hello world").decode()), 422, ["cannot read"],
                              "alwayson_scripts.controlnet.args[0].image"),
    "server path": (_unit_body(image="/etc/passwd.png"), 422, ["file paths are not accepted"], "alwayson_scripts.controlnet.args[0].image"),
    "relative path": (_unit_body(image="../secret/photo.jpg"), 422, ["file paths are not accepted"], "alwayson_scripts.controlnet.args[0].image"),
    "URL": (_unit_body(image="https://example.com/a.png"), 422, ["urls are not accepted"], "alwayson_scripts.controlnet.args[0].image"),
    "too many pixels": (_unit_body(image=_big_png(1024)), 422, ["1024×1024", "--max-input-pixels"], "alwayson_scripts.controlnet.args[0].image"),
    "unknown module": (_unit_body(module="cany"), 422, ["unknown module", "canny"], "alwayson_scripts.controlnet.args[0].module"),
    "module needing a server file": (_unit_body(module="depth"), 422, ["unknown module"], "alwayson_scripts.controlnet.args[0].module"),
    "unknown model": (_unit_body(model="control_v11p_sd15_canny [d14c016b]"), 422, ["unknown controlnet", "mini-edges"],
                      "alwayson_scripts.controlnet.args[0].model"),
    "no model": (_unit_body(model="None"), 422, ["unknown controlnet"], "alwayson_scripts.controlnet.args[0].model"),
    "weight out of range": (_unit_body(weight=3), 422, ["[0, 2]", "got 3"], "alwayson_scripts.controlnet.args[0].weight"),
    "weight not a number": (_unit_body(weight="heavy"), 422, ["must be a number"], "alwayson_scripts.controlnet.args[0].weight"),
    "guidance_end > 1": (_unit_body(guidance_end=1.5), 422, ["[0, 1]"], "alwayson_scripts.controlnet.args[0].guidance_end"),
    "start after end": (_unit_body(guidance_start=0.8, guidance_end=0.2), 422, ["after guidance_end"],
                        "alwayson_scripts.controlnet.args[0].guidance_start"),
    "unknown control mode": (_unit_body(control_mode="Loud"), 422, ["unknown control mode"], "alwayson_scripts.controlnet.args[0].control_mode"),
    "unknown resize mode": (_unit_body(resize_mode=7), 422, ["unknown resize mode"], "alwayson_scripts.controlnet.args[0].resize_mode"),
    "enabled not a bool": (_unit_body(enabled="yes"), 422, ["true or false"], "alwayson_scripts.controlnet.args[0].enabled"),
    "enabled unit without image": (_unit_body(image=""), 422, ["needs its condition image"], "alwayson_scripts.controlnet.args[0].image"),
    "inpaint mask": (_unit_body(mask=b64png(square())), 422, ["effective_region_mask"], "alwayson_scripts.controlnet.args[0].mask"),
    "unit not an object": (body(units=["canny"]), 422, ["unit object"], "alwayson_scripts.controlnet.args[0]"),
    "too many units": (body(units=[unit()] * 4), 422, ["4 units", "--units"], "alwayson_scripts.controlnet.args"),
    "unknown sampler": (body(sampler_name="Euler z"), 422, ["unknown sampler", "euler a"], "sampler_name"),
    "steps out of range": (body(steps=0), 422, ["steps"], "steps"),
    "steps not whole": (body(steps=2.5), 422, ["whole number"], "steps"),
    "width too large": (body(width=4096), 422, ["[8, 512]"], "width"),
    "batch too large": (body(batch_size=3, n_iter=2), 422, ["6 images", "--max-batch"], "batch_size"),
    "prompt not text": (body(prompt=["a", "b"]), 422, ["must be text"], "prompt"),
    "cfg NaN-like": (body(cfg_scale="nan"), 422, ["finite"], "cfg_scale"),
    "seed negative": (body(seed=-5), 422, ["seed"], "seed"),
    "body too large": (body(prompt="x" * (2 * 1024 * 1024)), 413, ["larger than 1 mb"], None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_generation_request(server, name):
    url, app = server
    payload, status, words, field = CASES[name]
    before = len(app.state.service.queue.jobs())
    raw = payload if isinstance(payload, bytes) else None
    r = _post(url, "/sdapi/v1/txt2img", None if raw else payload, raw)
    assert r.status_code == status, r.text
    answer = r.json()
    for word in words:
        assert word.lower() in answer["detail"].lower(), answer
    assert answer.get("field") == field
    if field:
        assert field in answer["detail"]
    assert len(app.state.service.queue.jobs()) == before  # nothing was queued


@pytest.mark.parametrize("payload, words", [
    ({"controlnet_module": "canny"}, ["no image selected"]),
    ({"controlnet_module": "nope", "controlnet_images": [b64png(square())]}, ["unknown module"]),
    ({"controlnet_module": "none", "controlnet_images": [b64png(square())]}, ["give a module"]),
    ({"controlnet_module": "canny", "controlnet_input_images": ["data:image/png;base64,%%%"]}, ["not valid base64"]),
    ({"controlnet_module": "canny", "controlnet_images": ["/home/user/photo.png"]}, ["file paths"]),
])
def test_bad_detect_request(server, payload, words):
    url, _ = server
    r = _post(url, "/controlnet/detect", payload)
    assert r.status_code == 422 and all(w in r.json()["detail"].lower() for w in words), r.text


def test_img2img_bad_requests(server):
    url, _ = server
    r = _post(url, "/sdapi/v1/img2img", body())
    assert r.status_code == 422 and r.json()["field"] == "init_images"
    r = _post(url, "/sdapi/v1/img2img", {**body(), "init_images": [b64png(square())], "mask": b64png(square())})
    assert r.status_code == 422 and "inpainting" in r.json()["detail"]
    r = _post(url, "/sdapi/v1/img2img", {**body(), "init_images": [b64png(square())], "denoising_strength": 0})
    assert r.status_code == 422 and r.json()["field"] == "denoising_strength"


def test_other_models_refused(server):
    url, _ = server
    r = _post(url, "/sdapi/v1/options", {"sd_model_checkpoint": "v1-5-pruned.safetensors"})
    assert r.status_code == 422 and "serves mini" in r.json()["detail"]
    assert _post(url, "/sdapi/v1/options", {"sd_model_checkpoint": "mini", "samples_format": "png"}).status_code == 200


@pytest.mark.parametrize("auth", [None, ("alice", "wrong"), ("bob", "s3cret")])
def test_missing_or_wrong_auth(server, auth):
    url, _ = server
    for method, path in (("get", "/"), ("get", "/static/app.js"), ("get", "/controlnet/model_list"), ("post", "/sdapi/v1/txt2img")):
        r = getattr(requests, method)(url + path, auth=auth)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic"), (path, r.text)
    assert requests.get(url + "/controlnet/version", auth=AUTH).json() == {"version": 3}


def test_queue_full_is_503_with_retry_after(server):
    """queue_size=1: one job running and one waiting fill it; the next request is refused at once."""
    import time

    url, app = server
    queue = app.state.service.queue
    running = _post(url, "/jobs/txt2img", body(seed=1, steps=150)).json()["job_id"]
    deadline = time.monotonic() + 30
    while queue.current is None or queue.current.id != running:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    waiting = _post(url, "/jobs/txt2img", body(seed=2, steps=2))
    refused = _post(url, "/sdapi/v1/txt2img", body(seed=3))
    assert waiting.status_code == 202 and refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1 and "queue is full" in refused.json()["detail"]
    for job in (running, waiting.json()["job_id"]):
        _post(url, f"/jobs/{job}/interrupt")


def test_serve_cli_bad_options(capsys):
    assert_user_error(["serve", "--api-auth", "alice"], capsys, "--api-auth", "user:password")
    assert_user_error(["serve", "--queue-size", "0"], capsys, "--queue-size")
    for bad in ("0", "-5", "nan"):
        assert_user_error(["serve", "--max-job-seconds", bad], capsys, "--max-job-seconds")
    assert_user_error(["serve", "--max-prompt-tokens", "0"], capsys, "--max-prompt-tokens")
    assert_user_error(["serve", "--model", "mini", "--controlnet-dir", "/no/such/dir"], capsys, "--controlnet-dir")


def test_listen_without_auth_warns(monkeypatch, capsys):
    """--listen without --api-auth: a warning, then the server starts (its run replaced here)."""
    from controlnet.cli import main

    started = {}

    class FakeServer:
        def __init__(self, app, host, port):
            self.where = {"host": host, "port": port}

        def run(self):
            started.update(self.where)

    monkeypatch.setattr("controlnet.web.server.make_server", FakeServer)
    monkeypatch.setattr("controlnet.web.engine.Engine", lambda *a, **k: _FakeEngine())
    assert main(["serve", "--listen", "--port", "7999"]) == 0
    assert started == {"host": "0.0.0.0", "port": 7999}
    assert "without --api-auth" in capsys.readouterr().err
    assert main(["serve", "--listen", "--api-auth", "a:b"]) == 0
    assert "without --api-auth" not in capsys.readouterr().err


class _FakeEngine:
    from controlnet.web.cost import StepCost

    model_name, controlnets, step_cost = "fake", {}, StepCost()


def test_limits_are_checked_before_decoding():
    """The pixel limit reads the header only: a 20000×20000 PNG (a few KB) is refused, not decoded."""
    from controlnet.web.inputs import FieldError, decode_image

    with pytest.raises(FieldError, match="400,000,000 pixels.*--max-input-pixels"):
        decode_image("image", _big_png(20000), 4096 * 4096)
    assert decode_image("image", "data:image/png;base64," + b64png(square()), 4096 * 4096).shape == (64, 64, 3)
    assert np.array_equal(decode_image("image", b64png(square()), 64 * 64), square())
