"""`controlnet serve`: each bad request gets the right status and a message naming the field,
and nothing is queued for it."""

from __future__ import annotations

import base64
import io
import json

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


def _nested(depth: int):
    value = [1.0]
    for _ in range(depth - 1):
        value = [value]
    return value


def _unit_body(**fields):
    return body(units=[{**unit(), **fields}])


def _box_mask(size: int = 64, box=(16, 48)) -> np.ndarray:
    """A binary inpaint mask: a white square (repaint) on black."""
    return square(size, box, colour=(255, 255, 255))


def _inpaint_unit(mask: str, module: str = "inpaint_only") -> dict:
    return {**unit(), "module": module, "model": "mini-inpaint", "image": {"image": b64png(square()), "mask": mask}}


MASK, SMALL_MASK = b64png(_box_mask()), b64png(_box_mask(32, (8, 24)))
U = "alwayson_scripts.controlnet.args[0]"


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
    "module needing a server file": (_unit_body(module="depth"), 422, ["needs weights", "--annotator-dir", "as depth"],
                                     "alwayson_scripts.controlnet.args[0].module"),
    "A1111 depth_midas": (_unit_body(module="depth_midas"), 422, ["needs weights", "dpt_hybrid-midas-501f0c75.pt", "midas/"],
                          f"{U}.module"),
    "A1111 seg_ofade20k": (_unit_body(module="seg_ofade20k"), 422, ["needs weights", "ade20k"], f"{U}.module"),
    "inpaint_only+lama": (_unit_body(module="inpaint_only+lama", model="mini-inpaint"), 422, ["lama", "inpaint_only"],
                          f"{U}.module"),
    "unknown model": (_unit_body(model="control_v11p_sd15_canny [d14c016b]"), 422, ["unknown controlnet", "mini-edges"],
                      "alwayson_scripts.controlnet.args[0].model"),
    "no model": (_unit_body(model="None"), 422, ["unknown controlnet"], "alwayson_scripts.controlnet.args[0].model"),
    "union_control_type on a plain ControlNet": (_unit_body(union_control_type="Canny"), 422,
                                                 ["for union controlnets", "mini-edges is not one"], f"{U}.union_control_type"),
    "union_control_type not text": (_unit_body(union_control_type=["Canny"]), 422, ["for union controlnets"],
                                    f"{U}.union_control_type"),
    "weight out of range": (_unit_body(weight=3), 422, ["[0, 2]", "got 3"], "alwayson_scripts.controlnet.args[0].weight"),
    "weight not a number": (_unit_body(weight="heavy"), 422, ["must be a number"], "alwayson_scripts.controlnet.args[0].weight"),
    # non-finite results: each of these made an all-black picture with HTTP 200
    "advanced_weighting overflows": (_unit_body(advanced_weighting=[1e308] * 7), 422, ["[-10, 10]", "1e+308"],
                                     "alwayson_scripts.controlnet.args[0].advanced_weighting[0]"),
    "advanced_weighting not numbers": (_unit_body(advanced_weighting="1,1"), 422, ["list of numbers"],
                                       "alwayson_scripts.controlnet.args[0].advanced_weighting"),
    "prompt weight overflows": (body(prompt="(red:" + "9" * 400 + ")"), 422, ["weight of 'red' is inf", "between 0 and 10"],
                                "prompt"),
    "prompt nested 5000 deep": (body(prompt="(" * 5000 + "red" + ")" * 5000), 422, ["5000 deep"], "prompt"),
    "negative prompt nested 5000 deep": (body(negative_prompt="[" * 5000 + "x" + "]" * 5000), 422, ["5000 deep"],
                                         "negative_prompt"),
    "negative prompt weight overflows": (body(negative_prompt="(x:" + "9" * 40 + ")"), 422, ["between 0 and 10"], "negative_prompt"),
    "blend of NaN": (body(prompt='("a", "b").blend(nan, 1)'), 422, [".blend() weight is nan"], "prompt"),
    "blend of zeros": (body(prompt='("a", "b").blend(0, 0)'), 422, ["add up to 0"], "prompt"),
    "negative prompt that is not valid text": (body(negative_prompt="ugly \udcff"), 422, ["lone surrogate"],
                                               "negative_prompt"),
    "compel nesting (exponential parse)": (body(prompt="(" * 8 + "red" + ")" * 8 + "+"), 422, ["compel", "8 deep"],
                                           "prompt"),
    "guidance_end > 1": (_unit_body(guidance_end=1.5), 422, ["[0, 1]"], "alwayson_scripts.controlnet.args[0].guidance_end"),
    "start after end": (_unit_body(guidance_start=0.8, guidance_end=0.2), 422, ["after guidance_end"],
                        "alwayson_scripts.controlnet.args[0].guidance_start"),
    "unknown control mode": (_unit_body(control_mode="Loud"), 422, ["unknown control mode"], "alwayson_scripts.controlnet.args[0].control_mode"),
    "unknown resize mode": (_unit_body(resize_mode=7), 422, ["unknown resize mode"], "alwayson_scripts.controlnet.args[0].resize_mode"),
    "enabled not a bool": (_unit_body(enabled="yes"), 422, ["true or false"], "alwayson_scripts.controlnet.args[0].enabled"),
    "enabled unit without image": (_unit_body(image=""), 422, ["needs its condition image"], "alwayson_scripts.controlnet.args[0].image"),
    "inpaint mask": (_unit_body(mask=MASK), 422, ["inpaint modules", "effective_region_mask"], f"{U}.mask"),
    "mask in an image object, canny": (_unit_body(image={"image": b64png(square()), "mask": MASK}), 422,
                                       ["inpaint modules"], f"{U}.image.mask"),
    "mask in an image list, canny": (_unit_body(image=[b64png(square()), MASK]), 422, ["inpaint modules"], f"{U}.image[1]"),
    "three images in a list": (_unit_body(image=[b64png(square())] * 3), 422, ["[image, mask]"], f"{U}.image"),
    "inpaint unit without mask": (_unit_body(module="inpaint_only", model="mini-inpaint"), 422, ["needs a mask"], f"{U}.mask"),
    "inpaint unit, all-black mask": (_unit_body(module="inpaint_global_harmonious", model="mini-inpaint",
                                                image=[b64png(square()), b64png(square(colour=(0, 0, 0)))]), 422,
                                     ["needs a mask", "all black"], f"{U}.mask"),
    "inpaint unit, mask of another size": (_unit_body(module="inpaint_only", model="mini-inpaint",
                                                      image={"image": b64png(square()), "mask": SMALL_MASK}), 422,
                                           ["32×32", "64×64"], f"{U}.image.mask"),
    "inpaint unit, mask not an image": (_unit_body(module="inpaint_only", model="mini-inpaint",
                                                   image=[b64png(square()), base64.b64encode(b"no picture").decode()]),
                                        422, ["cannot read"], f"{U}.image[1]"),
    "inpaint unit, mask twice": (_unit_body(module="inpaint_only", model="mini-inpaint", mask=MASK,
                                            image={"image": b64png(square()), "mask": MASK}), 422, ["given twice"], f"{U}.mask"),
    "inpaint unit, mask a server path": (_unit_body(module="inpaint_only", model="mini-inpaint", mask="/tmp/mask.png"), 422,
                                         ["file paths"], f"{U}.mask"),
    "two inpaint_only units, two masks": (body(units=[_inpaint_unit(MASK), _inpaint_unit(b64png(_box_mask(box=(0, 8))))]),
                                          422, ["one inpainting"], "alwayson_scripts.controlnet.args[1].mask"),
    "mask without init image": (body(mask=MASK), 422, ["init_images", "img2img"], "mask"),
    "weight_schedule negative factor": (_unit_body(weight_schedule="0:1,0.5:-1"), 422, ["factor"], f"{U}.weight_schedule"),
    "weight_schedule not increasing": (_unit_body(weight_schedule=[[0.5, 1], [0.2, 0]]), 422, ["increase"],
                                       f"{U}.weight_schedule"),
    "weight_schedule not keyframes": (_unit_body(weight_schedule="soon"), 422, ["fraction:factor"], f"{U}.weight_schedule"),
    "weight_schedule_interpolation unknown": (_unit_body(weight_schedule="0:1", weight_schedule_interpolation="cubic"), 422,
                                              ["hold", "linear"], f"{U}.weight_schedule_interpolation"),
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
    "100,000 nested lists": (b"[" * 100_000 + b"]" * 100_000, 422, ["deeper than 32 levels"], "body"),
    "100,000 nested objects": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 422, ["deeper than 32 levels"], "body"),
    "100,000 nested lists in a unit": (b'{"prompt": "x", "alwayson_scripts": {"controlnet": {"args": [' + b"[" * 100_000
                                       + b"]" * 100_000 + b"]}}}", 422, ["deeper than 32 levels"], "body"),
    "40 nested lists in a unit": (_unit_body(advanced_weighting=_nested(40)), 422, ["deeper than 32 levels"], "body"),
    "lone surrogate in prompt": (body(prompt="a \ud800 circle"), 422, ["lone surrogate", "utf-8"], "prompt"),
    "lone surrogate in negative_prompt": (body(negative_prompt="\udfff"), 422, ["lone surrogate"], "negative_prompt"),
    "lone surrogate in sampler_name": (body(sampler_name="Euler\ud800"), 422, ["lone surrogate"], "sampler_name"),
    "lone surrogate in styles": (body(styles=["ok", "\ud800"]), 422, ["lone surrogate"], "styles[1]"),
    "lone surrogate in override_settings": (body(override_settings={"sd_model_checkpoint": "\udc00"}), 422, ["lone surrogate"],
                                            "override_settings.sd_model_checkpoint"),
    "lone surrogate in a key": ({**body(), "\ud800": 1}, 422, ["lone surrogate"], "body"),
    "lone surrogate in a unit module": (_unit_body(module="canny\ud800"), 422, ["lone surrogate"],
                                       "alwayson_scripts.controlnet.args[0].module"),
    "lone surrogate in a unit model": (_unit_body(model="\ud800"), 422, ["lone surrogate"], "alwayson_scripts.controlnet.args[0].model"),
    "lone surrogate in a unit image": (_unit_body(image="\ud800"), 422, ["lone surrogate"], "alwayson_scripts.controlnet.args[0].image"),
    "lone surrogate in a unit mode": (_unit_body(control_mode="\ud800"), 422, ["lone surrogate"],
                                      "alwayson_scripts.controlnet.args[0].control_mode"),
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


def test_a_result_that_went_non_finite_is_a_422_not_a_black_picture(server, monkeypatch):
    """NaN latents (a weight that overflows in fp16, a damaged checkpoint) gave an all-black picture with HTTP 200."""
    import torch

    from controlnet.pipeline import ControlPipeline

    monkeypatch.setattr(ControlPipeline, "_denoise", lambda self, call, x, *a, **k: torch.full_like(x, float("nan")))
    url, _ = server
    r = _post(url, "/sdapi/v1/txt2img", body())
    assert r.status_code == 422, r.text[:300]
    assert "numerically wrong" in r.json()["detail"] and "likely causes" in r.json()["detail"]


@pytest.mark.parametrize("payload, words", [
    ({"controlnet_module": "canny"}, ["no image selected"]),
    ({"controlnet_module": "nope", "controlnet_images": [b64png(square())]}, ["unknown module"]),
    ({"controlnet_module": "none", "controlnet_images": [b64png(square())]}, ["give a module"]),
    ({"controlnet_module": "canny", "controlnet_input_images": ["data:image/png;base64,%%%"]}, ["not valid base64"]),
    ({"controlnet_module": "canny", "controlnet_images": ["/home/user/photo.png"]}, ["file paths"]),
    ({"controlnet_module": "inpaint_only", "controlnet_images": [b64png(square())]}, ["use it in a controlnet unit"]),
    ({"controlnet_module": "depth_midas", "controlnet_images": [b64png(square())]}, ["needs weights", "--annotator-dir"]),
])
def test_bad_detect_request(server, payload, words):
    url, _ = server
    r = _post(url, "/controlnet/detect", payload)
    assert r.status_code == 422 and all(w in r.json()["detail"].lower() for w in words), r.text


@pytest.mark.parametrize("path, payload, field", [
    ("/controlnet/detect", {"controlnet_module": "canny\ud800", "controlnet_images": [b64png(square())]}, "controlnet_module"),
    ("/sdapi/v1/options", {"sd_model_checkpoint": "mini\ud800"}, "sd_model_checkpoint"),
    ("/sdapi/v1/img2img", {**body(), "init_images": ["\ud800"]}, "init_images[0]"),
    ("/jobs/txt2img", body(prompt="\ud800"), "prompt"),
    ("/jobs/detect", {"controlnet_module": "canny", "controlnet_images": [b64png(square())], "x": _nested(33)}, "body"),
    ("/sdapi/v1/options", {"a": _nested(40)}, "body"),
])
def test_every_json_route_refuses_surrogates_and_deep_nesting(server, path, payload, field):
    url, app = server
    before = len(app.state.service.queue.jobs())
    r = _post(url, path, payload)
    assert r.status_code == 422 and r.json()["field"] == field, r.text
    assert ("lone surrogate" if field != "body" else "deeper than 32") in r.json()["detail"]
    assert len(app.state.service.queue.jobs()) == before


def test_json_nesting_up_to_the_limit_is_read():
    from controlnet.web.guard import MAX_JSON_DEPTH, parse_json

    assert parse_json(json.dumps({"a": _nested(MAX_JSON_DEPTH - 1)}).encode()) == {"a": _nested(MAX_JSON_DEPTH - 1)}
    assert parse_json(json.dumps("\ud83d\ude00 a pair is fine").encode()) == "\U0001F600 a pair is fine"


def test_img2img_bad_requests(server):
    url, _ = server
    r = _post(url, "/sdapi/v1/img2img", body())
    assert r.status_code == 422 and r.json()["field"] == "init_images"
    r = _post(url, "/sdapi/v1/img2img", {**body(), "init_images": [b64png(square())], "mask": b64png(square())})
    assert r.status_code == 422 and r.json()["field"] == "mask" and "empty" in r.json()["detail"]  # red rounds to black
    r = _post(url, "/sdapi/v1/img2img", {**body(), "init_images": [b64png(square())], "denoising_strength": 0})
    assert r.status_code == 422 and r.json()["field"] == "denoising_strength"


def test_other_models_refused(server):
    url, _ = server
    r = _post(url, "/sdapi/v1/options", {"sd_model_checkpoint": "v1-5-pruned.safetensors"})
    assert r.status_code == 422 and "serves mini" in r.json()["detail"]
    assert _post(url, "/sdapi/v1/options", {"sd_model_checkpoint": "mini", "samples_format": "png"}).status_code == 200


def _img2img(**fields) -> dict:
    return {**body(), "init_images": [b64png(square())], **fields}


# img2img and its inpainting fields: (request body, words the message must contain, field)
IMG2IMG_CASES = {
    "no init image": (body(), ["init_images"], "init_images"),
    "strength 0": (_img2img(denoising_strength=0), ["(0, 1]"], "denoising_strength"),
    "unknown resize_mode": (_img2img(resize_mode=9), ["unknown resize mode"], "resize_mode"),
    "mask of another size": (_img2img(mask=SMALL_MASK), ["32×32", "64×64"], "mask"),
    "mask not an image": (_img2img(mask=base64.b64encode(b"hello world").decode()), ["cannot read"], "mask"),
    "mask malformed base64": (_img2img(mask="@@@"), ["not valid base64"], "mask"),
    "mask a server path": (_img2img(mask="/etc/mask.png"), ["file paths"], "mask"),
    "mask a URL": (_img2img(mask="http://example.com/m.png"), ["urls are not accepted"], "mask"),
    "mask too many pixels": (_img2img(mask=_big_png(1024)), ["--max-input-pixels"], "mask"),
    "mask not text": (_img2img(mask=[1, 2]), ["base64-encoded image"], "mask"),
    "mask all black": (_img2img(mask=b64png(square(colour=(0, 0, 0)))), ["empty"], "mask"),
    "mask all white, inverted": (_img2img(mask=b64png(square(box=(0, 64), colour=(255, 255, 255))), inpainting_mask_invert=1),
                                 ["empty", "inpainting_mask_invert"], "mask"),
    "inpainting_mask_invert not a bool": (_img2img(mask=MASK, inpainting_mask_invert="yes"), ["true or false"],
                                          "inpainting_mask_invert"),
    "inpainting_fill latent noise": (_img2img(mask=MASK, inpainting_fill=2), ["latent noise", "0 (fill) or 1 (original)"],
                                     "inpainting_fill"),
    "inpainting_fill out of range": (_img2img(mask=MASK, inpainting_fill=7), ["[0, 3]"], "inpainting_fill"),
    "mask_blur negative": (_img2img(mask=MASK, mask_blur=-1), ["mask_blur"], "mask_blur"),
    "mask_blur not a number": (_img2img(mask=MASK, mask_blur="soft"), ["must be a number"], "mask_blur"),
    "initial_noise_multiplier not a number": (_img2img(initial_noise_multiplier="x"), ["must be a number"],
                                              "initial_noise_multiplier"),
    "mask_round not a bool": (_img2img(mask=MASK, mask_round="maybe"), ["true or false"], "mask_round"),
    "inpaint_full_res not a bool": (_img2img(mask=MASK, inpaint_full_res="only masked"), ["true or false"], "inpaint_full_res"),
    "unit mask of another size than the init image": (_img2img(alwayson_scripts={"controlnet": {"args": [
        {"enabled": True, "module": "inpaint_only", "model": "mini-inpaint", "mask": SMALL_MASK}]}}), ["32×32", "64×64"],
        "alwayson_scripts.controlnet.args[0].mask"),
    "inpaint unit, no mask anywhere": (_img2img(alwayson_scripts={"controlnet": {"args": [
        {"enabled": True, "module": "inpaint_global_harmonious", "model": "mini-inpaint"}]}}), ["needs a mask"],
        "alwayson_scripts.controlnet.args[0].mask"),
}


@pytest.mark.parametrize("name", list(IMG2IMG_CASES))
def test_img2img_inpainting_bad_requests(server, name):
    url, app = server
    payload, words, field = IMG2IMG_CASES[name]
    before = len(app.state.service.queue.jobs())
    r = _post(url, "/sdapi/v1/img2img", payload)
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer.get("field") == field and field in answer["detail"], answer
    for word in words:
        assert word.lower() in answer["detail"].lower(), answer
    assert len(app.state.service.queue.jobs()) == before  # nothing was queued


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
    assert_user_error(["serve", "--annotator-dir", "/no/such/dir"], capsys, "--annotator-dir")
    assert_user_error(["serve", "--model", "mini", "--controlnet-dir", "/no/such/dir"], capsys, "--controlnet-dir")
    assert_user_error(["serve", "--cors-allow-origins", "http://ok.example,app.example/page"], capsys, "--cors-allow-origins",
                      "app.example/page")
    assert_user_error(["serve", "--cors-allow-origin-regex", "https://(.*"], capsys, "--cors-allow-origins-regex")


def test_cors_flags_reach_the_server(monkeypatch):
    """--cors-allow-origins (or A1111's singular spelling) and the regex: those pages get a preflight answer."""
    from starlette.testclient import TestClient

    from controlnet.cli import main

    served = {}

    class FakeServer:
        def __init__(self, app, host, port):
            served.update(app=app)

        def run(self):
            pass

    monkeypatch.setattr("controlnet.web.server.make_server", FakeServer)
    monkeypatch.setattr("controlnet.web.engine.Engine", lambda *a, **k: _FakeEngine())
    assert main(["serve", "--cors-allow-origin", "http://localhost:3000", "--cors-allow-origins-regex", r"https://.*\.example"]) == 0
    client = TestClient(served["app"])
    for origin, status in (("http://localhost:3000", 200), ("https://a.example", 200), ("http://evil.example", 403)):
        r = client.options("/jobs/txt2img", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert r.status_code == status and (r.headers.get("access-control-allow-origin") == origin) == (status == 200), origin


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
