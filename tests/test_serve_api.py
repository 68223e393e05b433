"""`controlnet serve`: the A1111 / sd-webui-controlnet API driven by the unmodified `webuiapi`
client and by plain HTTP, on the built-in mini model; job ids, progress, interrupt, disconnects."""

from __future__ import annotations

import json
import socket
import time

import numpy as np
import pytest
import requests

from serve_tools import b64png, body, decode, engine, running_server, square

webuiapi = pytest.importorskip("webuiapi", reason="the serve extra is not installed (webuiapi)")


@pytest.fixture(scope="module")
def server():
    from controlnet.web import Limits

    with running_server(Limits(queue_size=4)) as (url, app):
        yield url, app


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_webuiapi_txt2img_two_units_and_detect(server):
    """The unmodified client: two units -> the batch, then each unit's detected map; detect -> the map."""
    from PIL import Image

    from controlnet.annotators import annotate
    from controlnet.pipeline import ControlUnit

    url, _ = server
    api = webuiapi.WebUIApi(port=int(url.rsplit(":", 1)[1]), sampler="DDIM", steps=3)
    assert api.has_controlnet and "mini-edges" in api.controlnet_model_list()[0]
    photo, seg = square(), square(colour=(0, 255, 0))
    units = [webuiapi.ControlNetUnit(image=Image.fromarray(photo), module="canny", model="mini-edges"),
             webuiapi.ControlNetUnit(image=Image.fromarray(seg), module="none", model=api.controlnet_model_list()[1],
                                     weight=0.5, control_mode=1, resize_mode="Just Resize")]
    r = api.txt2img(prompt="a red square on a blue background", seed=11, width=64, height=64, cfg_scale=5,
                    batch_size=2, controlnet_units=units)
    assert len(r.images) == 2 + 2 and r.info["all_seeds"] == [11, 12]
    # the detected maps: canny with webuiapi's thresholds (64, 64), fitted with its Resize and Fill; the seg map as given
    edges = annotate("canny", photo, 512, width=64, height=64, resize_mode="resize_and_fill", low_threshold=64, high_threshold=64)
    assert np.array_equal(np.array(r.images[2].convert("RGB")), edges)
    assert np.array_equal(np.array(r.images[3].convert("RGB")), seg)
    # the samples are exactly ControlPipeline's for the same units and seed
    e = engine()
    direct = e.pipe("a red square on a blue background", [
        ControlUnit(e.controlnet("mini-edges"), edges, resize="resize_and_fill"),
        ControlUnit(e.controlnet("mini-seg"), seg, weight=0.5, mode="prompt", resize="just_resize")],
        steps=3, guidance_scale=5.0, scheduler="ddim", eta=1.0, seed=11, num_images=2, width=64, height=64, progress=False)
    for got, want in zip(r.images[:2], direct.images):
        assert np.array_equal(np.array(got.convert("RGB")), np.array(want))
    # each image keeps its parameters in the `controlnet generate` format
    stored = json.loads(r.images[1].info["controlnet"])
    assert stored["seed"] == 12 and [u["preprocess"] for u in stored["units"]] == ["canny", None]
    assert "Seed: 12" in r.images[1].info["parameters"]
    detected = api.controlnet_detect([Image.fromarray(photo)], module="canny")
    assert np.array_equal(np.array(detected.images[0].convert("RGB")),
                          annotate("canny", photo, 512, low_threshold=64, high_threshold=64))


def test_plain_http_units_schema(server):
    """Strings or old integers for modes, `input_image` alias, `enabled` false by default, script key any case."""
    url, _ = server
    args = [{"input_image": b64png(square()), "module": "canny", "model": "mini-edges [whatever]", "enabled": True,
             "control_mode": 2, "resize_mode": 1, "guidance_end": 0.5},
            {"image": b64png(square()), "module": "canny", "model": "mini-seg"}]  # not enabled: ignored
    r = requests.post(f"{url}/sdapi/v1/txt2img", json={**body(seed=3), "alwayson_scripts": {"ControlNet": {"args": args}}})
    assert r.status_code == 200, r.text
    data = r.json()
    info = json.loads(data["info"])
    assert len(data["images"]) == 1 + 1 and info["job_id"] == r.headers["X-Job-Id"]
    assert "Control Mode: control" in info["extra_generation_params"]["ControlNet 0"]
    assert data["parameters"]["prompt"] == "a red square on a blue background"
    # save_detected_map: false -> only the samples
    args[0]["save_detected_map"] = False
    r = requests.post(f"{url}/sdapi/v1/txt2img", json={**body(seed=3), "alwayson_scripts": {"controlnet": {"args": args}}})
    assert len(r.json()["images"]) == 1


def test_img2img_unit_without_image_uses_init_image(server):
    url, _ = server
    r = requests.post(f"{url}/sdapi/v1/img2img", json={**body(seed=5, steps=4), "init_images": [b64png(square())],
                                                       "denoising_strength": 0.5,
                                                       "alwayson_scripts": {"controlnet": {"args": [
                                                           {"enabled": True, "module": "canny", "model": "mini-edges"}]}}})
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 2 and decode(images[1]).max() == 255  # the init image's canny outline


def test_info_routes(server):
    url, _ = server
    get = lambda path: requests.get(url + path).json()  # noqa: E731
    assert get("/controlnet/version") == {"version": 3}
    assert get("/controlnet/settings") == {"control_net_unit_count": 3}
    modules = get("/controlnet/module_list")
    assert modules["module_list"][0] == "none" and "canny" in modules["module_list"]
    assert [s["name"] for s in modules["module_detail"]["canny"]["sliders"]] == ["Preprocessor Resolution", "low_threshold", "high_threshold"]
    assert "depth" not in modules["module_list"]  # needs a local model file: not offered
    assert get("/sdapi/v1/sd-models")[0]["model_name"] == "mini"
    assert "Euler a" in [s["name"] for s in get("/sdapi/v1/samplers")]
    assert get("/sdapi/v1/options")["sd_model_checkpoint"].startswith("mini [")
    assert "controlnet m2m" in get("/sdapi/v1/scripts")["txt2img"]
    assert get("/sdapi/v1/progress")["state"]["job"] == ""


def test_page_loads_nothing_from_elsewhere(server):
    url, _ = server
    page = requests.get(url + "/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["Content-Security-Policy"]
    for text in (page.text, requests.get(url + "/static/app.js").text, requests.get(url + "/static/style.css").text):
        assert "http://" not in text and "https://" not in text and "@import" not in text
    assert requests.get(url + "/docs").status_code == 404  # FastAPI's docs page would load a CDN


def test_jobs_interrupt_stops_only_the_running_job(server):
    url, _ = server
    long = requests.post(f"{url}/jobs/txt2img", json=body(seed=1, steps=150))
    short = requests.post(f"{url}/jobs/txt2img", json=body(seed=2, steps=2))
    assert long.status_code == short.status_code == 202
    a, b = long.json()["job_id"], short.json()["job_id"]
    assert a != b and requests.get(f"{url}/jobs/{b}").json()["state"] == "queued"
    _wait(lambda: requests.get(f"{url}/jobs/{a}").json()["step"] > 0)
    progress = requests.get(f"{url}/sdapi/v1/progress").json()
    assert progress["state"]["job"] == a and 0 < progress["progress"] < 1
    assert requests.post(f"{url}/sdapi/v1/interrupt").json() == {"interrupted": a}
    _wait(lambda: requests.get(f"{url}/jobs/{b}").json()["state"] == "done")
    first = requests.get(f"{url}/jobs/{a}").json()
    assert first["state"] == "interrupted" and first["step"] < 150
    assert len(first["result"]["images"]) == 1 and json.loads(first["result"]["info"])["interrupted"]
    second = requests.get(f"{url}/jobs/{b}").json()
    assert json.loads(second["result"]["info"])["all_seeds"] == [2] and not json.loads(second["result"]["info"])["interrupted"]


def test_disconnected_client_does_not_leave_work_running(server):
    url, app = server
    queue = app.state.service.queue
    payload = json.dumps(body(seed=4, steps=150)).encode()
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    _wait(lambda: queue.current is not None and queue.current.step > 0)
    job = queue.current
    sock.close()
    _wait(lambda: job.done.is_set(), timeout=10)
    assert job.state == "cancelled" and job.cancelled == "the client disconnected" and job.step < 150
    assert job.result is None


def test_unknown_job_is_404(server):
    url, _ = server
    r = requests.get(f"{url}/jobs/nope")
    assert r.status_code == 404 and "no job" in r.json()["detail"]
