"""`controlnet serve`: the A1111 / sd-webui-controlnet API driven by the unmodified `webuiapi`
client and by plain HTTP, on the built-in mini model; job ids, progress, interrupt, disconnects."""

from __future__ import annotations

import base64
import io
import json
import socket
import time

import numpy as np
import pytest
import requests

from serve_tools import b64png, body, decode, engine, running_server, square, unit

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
    assert "mini-edges" in api.controlnet_model_list()[0]  # (has_controlnet stays False: no "controlnet m2m" script is listed)
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


def _box_mask(box=(16, 40)) -> np.ndarray:
    """A binary mask: white (repaint) square on black, as bools."""
    mask = np.zeros((64, 64), bool)
    mask[box[0]:box[1], box[0]:box[1]] = True
    return mask


def _png(mask: np.ndarray) -> str:
    return b64png(mask.astype(np.uint8) * 255)


def test_webuiapi_img2img_inpainting_with_a_unit(server):
    """The unmodified client inpaints with an inpaint_only unit on mini-inpaint: exactly ControlPipeline's inpainting
    (A1111's fill, the unit's hint from the init image and the img2img mask, the paste through mask_blur 4)."""
    from PIL import Image

    from controlnet.pipeline import ControlUnit
    from controlnet.pipeline.inpaint import fill_masked, inpaint_map

    url, _ = server
    api = webuiapi.WebUIApi(port=int(url.rsplit(":", 1)[1]), sampler="DDIM", steps=4)
    picture, mask = square(colour=(0, 0, 255)), _box_mask((28, 36))
    unit = webuiapi.ControlNetUnit(module="inpaint_only", model="mini-inpaint")
    r = api.img2img(images=[Image.fromarray(picture)], mask_image=Image.fromarray(mask.astype(np.uint8) * 255),
                    prompt="a red square on a blue background", seed=21, width=64, height=64, cfg_scale=5,
                    controlnet_units=[unit])
    assert len(r.images) == 1 + 1 and r.info["all_seeds"] == [21]
    assert any("inpaint_full_res" in w for w in r.info["warnings"])  # webuiapi sends it; not offered, said so
    e = engine()
    direct = e.pipe("a red square on a blue background",
                    [ControlUnit(e.controlnet("mini-inpaint"), inpaint_map(picture, mask), resize="resize_and_fill")],
                    steps=4, guidance_scale=5.0, scheduler="ddim", eta=1.0, seed=21, width=64, height=64,
                    init_image=fill_masked(picture, mask), strength=0.75, mask_image=mask, inpaint_mode="inpaint_only",
                    mask_blur=4, init_resize="just_resize", progress=False)
    got = np.array(r.images[0].convert("RGB"))
    assert np.array_equal(got, np.array(direct.images[0]))
    far = np.ones_like(mask)
    far[4:60, 4:60] = False  # beyond the mask dilated by 2 × mask_blur and its blur's tail: the picture as it was
    assert np.array_equal(got[far], picture[far]) and not np.array_equal(got[mask], picture[mask])


def _img2img(url, **fields):
    payload = {**body(seed=9, steps=4), "init_images": [b64png(square())], "denoising_strength": 0.9, **fields}
    r = requests.post(f"{url}/sdapi/v1/img2img", json=payload)
    assert r.status_code == 200, r.text
    return decode(r.json()["images"][0]), json.loads(r.json()["info"])


def test_img2img_mask_fields(server):
    """mask (white = repaint), inpainting_mask_invert, mask_blur 0 (a hard paste), inpainting_fill 1 (original)."""
    url, _ = server
    picture, mask = square(), _box_mask()
    got, info = _img2img(url, mask=_png(mask), mask_blur=0, inpainting_fill=1)
    assert np.array_equal(got[~mask], picture[~mask]) and not np.array_equal(got[mask], picture[mask])
    assert not info["warnings"]
    inverted, _ = _img2img(url, mask=_png(~mask), inpainting_mask_invert=1, mask_blur=0, inpainting_fill=1)
    assert np.array_equal(inverted, got)
    filled, _ = _img2img(url, mask=_png(mask), mask_blur=0, inpainting_fill=0)
    assert np.array_equal(filled[~mask], picture[~mask]) and not np.array_equal(filled, got)
    plain, _ = _img2img(url)
    assert not np.array_equal(plain[~mask], picture[~mask])  # without a mask the whole picture changes
    _, info = _img2img(url, mask=_png(mask), inpaint_full_res=True, initial_noise_multiplier=1.2, mask_round=False,
                       mask_blur_x=8)
    said = " ".join(info["warnings"])
    for field in ("inpaint_full_res", "initial_noise_multiplier", "mask_round", "mask_blur_x"):
        assert field in said, info["warnings"]  # not offered: reported, not silently dropped


def test_img2img_grey_mask_is_rounded_as_a1111(server):
    """An anti-aliased or JPEG mask (what a drawn stroke gives) is rounded at half intensity, as A1111 rounds
    its masks, and info.warnings says how many pixels were; the result is that of the rounded mask."""
    url, _ = server
    mask = _box_mask()
    grey = mask.astype(np.uint8) * 255
    grey[16:40, 40] = 140  # an anti-aliased edge: repainted
    grey[16:40, 15] = 90  # another: kept
    got, info = _img2img(url, mask=b64png(grey), mask_blur=0, inpainting_fill=1)
    rounded = mask.copy()
    rounded[16:40, 40] = True
    want, plain = _img2img(url, mask=_png(rounded), mask_blur=0, inpainting_fill=1)
    assert np.array_equal(got, want) and not plain["warnings"]
    assert any(w.startswith("mask: 48 grey or coloured pixels") for w in info["warnings"]), info["warnings"]


def test_img2img_mask_with_alpha_follows_the_pipeline_rule(server):
    """A mask drawn on a transparent layer is read by the package's one mask rule: the result is the pipeline's
    for the same RGBA mask (as `generate --inpaint-mask` reads it)."""
    url, _ = server
    layer = np.zeros((64, 64, 4), np.uint8)
    layer[16:40, 16:40] = 255  # an opaque white square on a transparent layer
    got, _ = _img2img(url, mask=b64png(layer), mask_blur=0, inpainting_fill=1)
    e = engine()
    direct = e.pipe("a red square on a blue background", [], steps=4, guidance_scale=5.0, scheduler="ddim", seed=9,
                    width=64, height=64, init_image=square(), strength=0.9, mask_image=layer, inpaint_mode="inpaint_only",
                    mask_blur=0, init_resize="just_resize", progress=False)
    assert np.array_equal(got, np.array(direct.images[0]))


def _txt2img(url, units, seed=7):
    """The units at weight 1, Balanced (explicit: an omitted value would follow the ControlNet's recommendation)."""
    units = [{"weight": 1.0, "control_mode": "Balanced", **u} for u in units]
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=body(seed=seed, steps=4, units=units))
    assert r.status_code == 200, r.text
    return [decode(b) for b in r.json()["images"]], json.loads(r.json()["info"])


def test_txt2img_inpaint_only_unit_keeps_its_picture_outside_the_mask(server):
    """The unit's mask in A1111's three forms gives one result: the unit's picture kept away from the mask."""
    url, _ = server
    picture, mask = square(colour=(0, 255, 0)), _box_mask()
    forms = [{"image": {"image": b64png(picture), "mask": _png(mask)}}, {"image": [b64png(picture), _png(mask)]},
             {"image": b64png(picture), "mask": _png(mask)}]
    results = [_txt2img(url, [{"enabled": True, "module": "inpaint_only", "model": "mini-inpaint", **f}])[0] for f in forms]
    assert all(np.array_equal(r[0], results[0][0]) for r in results)
    got = results[0][0]
    far = np.ones_like(mask)
    far[4:52, 4:52] = False  # beyond the mask dilated and blurred for the paste (12 px)
    assert np.array_equal(got[far], picture[far]) and not np.array_equal(got[mask], picture[mask])


def test_inpaint_global_harmonious_unit_is_the_inpaint_hint(server):
    """inpaint_global_harmonious: the unit reads the inpaint hint (-1 in the mask); the whole picture is sampled."""
    from controlnet.pipeline import ControlUnit
    from controlnet.pipeline.inpaint import inpaint_map

    url, _ = server
    picture, mask = square(colour=(0, 255, 0)), _box_mask()
    images, _ = _txt2img(url, [{"enabled": True, "module": "inpaint_global_harmonious", "model": "mini-inpaint",
                                "image": [b64png(picture), _png(mask)]}])
    e = engine()
    direct = e.pipe("a red square on a blue background", [ControlUnit(e.controlnet("mini-inpaint"), inpaint_map(picture, mask))],
                    steps=4, guidance_scale=5.0, scheduler="ddim", seed=7, width=64, height=64, progress=False)
    assert np.array_equal(images[0], np.array(direct.images[0]))


def test_unit_weight_schedule(server):
    """weight_schedule (this server's extra unit field) is the pipeline's strength schedule."""
    from controlnet.pipeline import ControlUnit

    url, _ = server
    schedule = {"weight_schedule": "0:1,0.5:0", "weight_schedule_interpolation": "linear"}
    images, _ = _txt2img(url, [{"enabled": True, "module": "none", "model": "mini-edges", "image": b64png(square()),
                                **schedule}])
    unscheduled, _ = _txt2img(url, [{"enabled": True, "module": "none", "model": "mini-edges", "image": b64png(square())}])
    e = engine()
    direct = e.pipe("a red square on a blue background", [ControlUnit(e.controlnet("mini-edges"), square(),
                                                                      schedule="0:1,0.5:0", schedule_interpolation="linear")],
                    steps=4, guidance_scale=5.0, scheduler="ddim", seed=7, width=64, height=64, progress=False)
    assert np.array_equal(images[0], np.array(direct.images[0])) and not np.array_equal(images[0], unscheduled[0])


def test_module_list_offers_only_what_runs_here(server):
    """Every listed preprocessor runs (detect answers 200); the inpaint modules are listed; one whose optional
    package is missing is not, and asking for it says what to install."""
    from controlnet.annotators import get_annotator

    url, _ = server
    listed = requests.get(url + "/controlnet/module_list").json()["module_list"]
    inpaint = {"inpaint_only", "inpaint_global_harmonious"}
    assert inpaint <= set(listed)
    for name in set(listed) - inpaint - {"none"}:
        r = requests.post(f"{url}/controlnet/detect", json={"controlnet_module": name,
                                                            "controlnet_input_images": [b64png(square())]})
        assert r.status_code == 200, (name, r.text)
    if get_annotator("pose").unavailable():  # mediapipe is an optional extra
        assert "pose" not in listed and "mediapipe_face" not in listed
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=body(units=[{"enabled": True, "module": "pose",
                                                                        "model": "mini-edges", "image": b64png(square())}]))
        assert r.status_code == 422 and "mediapipe" in r.json()["detail"], r.text


def test_annotator_dir_offers_depth(server, tmp_path):
    """The depth annotator (A1111's depth_anything maps to it): without weights a 422 says where to put them; with them in
    the server's --annotator-dir it is listed and runs, its map exactly the annotator's."""
    from PIL import Image

    from controlnet.annotators import annotate
    from test_annotators_learned import save_dpt

    url, _ = server
    detect = {"controlnet_module": "depth", "controlnet_input_images": [b64png(square())]}
    r = requests.post(f"{url}/controlnet/detect", json=detect)
    assert r.status_code == 422 and "put a transformers depth-estimation folder" in r.json()["detail"], r.text
    assert "--annotator-dir" in r.json()["detail"]
    e = engine()
    save_dpt(tmp_path / "depth")
    e.annotator_dir = tmp_path
    try:
        listed = requests.get(url + "/controlnet/module_list").json()["module_list"]
        assert "depth" in listed and "seg_ade20k" not in listed
        assert "depth_midas" not in listed and "normal_midas" not in listed  # they read dpt_hybrid-midas-501f0c75.pt
        depth_type = requests.get(url + "/controlnet/control_types").json()["control_types"]["Depth"]
        assert "depth" in depth_type["module_list"]  # the Control Type filter offers what module_list does
        r = requests.post(f"{url}/controlnet/detect", json=detect)
        assert r.status_code == 200, r.text
        got = np.array(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))).convert("RGB"))
        assert np.array_equal(got, annotate("depth", square(), 512, model=tmp_path / "depth"))
        r = requests.post(f"{url}/controlnet/detect", json={**detect, "controlnet_module": "seg_ofade20k"})
        assert r.status_code == 422 and "as seg_ofade20k in this server's --annotator-dir" in r.json()["detail"]
        assert str(tmp_path) not in r.json()["detail"]  # no server path in answers
    finally:
        e.annotator_dir = None


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
    assert "Control Mode: ControlNet is more important" in info["extra_generation_params"]["ControlNet 0"]
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
    assert get("/sdapi/v1/scripts") == {"txt2img": [], "img2img": []}  # none runs: none is advertised
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
    sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
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


def test_omitted_settings_follow_the_controlnets_recommendation(server):
    """As `controlnet generate`: a value the request leaves out takes what its ControlNets' recommended.json
    says (CFG, sampler, steps when they agree; weight and control mode per unit), reported in info.recommended;
    explicit values win; without units, A1111's defaults."""
    from controlnet import recommended
    from controlnet.assets import mini_controlnet_dir
    from controlnet.web.schema import DEFAULTS, SAMPLER_LABELS

    url, _ = server
    stored = recommended.read(mini_controlnet_dir("edges"))
    assert stored, "the built-in edges ControlNet carries recommended settings"
    post = lambda b: requests.post(f"{url}/sdapi/v1/txt2img", json=b).json()  # noqa: E731
    bare = body(seed=9, units=[unit()])
    for key in ("cfg_scale", "sampler_name"):
        del bare[key]
    got = post(bare)
    info = json.loads(got["info"])
    want = {"cfg_scale": stored["guidance_scale"], "sampler_name": SAMPLER_LABELS[stored["scheduler"]],
            "alwayson_scripts.controlnet.args[0].weight": stored["weight"]}
    assert {k: info["recommended"][k] for k in want} == want and "steps" not in info["recommended"]  # steps were given
    assert (info["cfg_scale"], info["sampler_name"]) == (want["cfg_scale"], want["sampler_name"])
    explicit = post(body(seed=9, units=[unit(weight=stored["weight"])], cfg_scale=stored["guidance_scale"],
                         sampler_name=want["sampler_name"]))
    assert np.array_equal(decode(got["images"][0]), decode(explicit["images"][0]))  # those values were used
    assert json.loads(explicit["info"])["recommended"] == {"alwayson_scripts.controlnet.args[0].control_mode": "Balanced"}
    mine = json.loads(post({**bare, "cfg_scale": 5, "sampler_name": "DDIM"})["info"])  # explicit values win
    assert (mine["cfg_scale"], mine["sampler_name"]) == (5, "DDIM") and "cfg_scale" not in mine["recommended"]
    plain = json.loads(post({k: v for k, v in bare.items() if k != "alwayson_scripts"})["info"])
    assert (plain["cfg_scale"], plain["sampler_name"], plain["recommended"]) == (DEFAULTS["cfg_scale"], DEFAULTS["sampler_name"], {})
    # /config gives the page the same values
    assert requests.get(url + "/config").json()["recommended"][next(
        t for t in requests.get(url + "/controlnet/model_list").json()["model_list"] if t.startswith("mini-edges"))][
        "cfg_scale"] == stored["guidance_scale"]


def test_control_types(server):
    """sd-webui-controlnet's GET /controlnet/control_types: per type its preprocessors and models, with defaults."""
    url, _ = server
    types = requests.get(url + "/controlnet/control_types").json()["control_types"]
    modules = requests.get(url + "/controlnet/module_list").json()["module_list"]
    models = requests.get(url + "/controlnet/model_list").json()["model_list"]
    assert types["All"] == {"module_list": modules, "model_list": ["None", *models], "default_option": "none", "default_model": "None"}
    canny = types["Canny"]
    edges = next(t for t in models if t.startswith("mini-edges"))
    assert canny["default_option"] == "canny" and canny["default_model"] == edges
    assert canny["module_list"][0] == "none" and "canny" in canny["module_list"] and "mlsd" not in canny["module_list"]
    assert canny["model_list"] == ["None", edges]
    for kind, entry in types.items():
        assert set(entry) == {"module_list", "model_list", "default_option", "default_model"}, kind
        assert set(entry["module_list"]) <= set(modules) and set(entry["model_list"]) <= {"None", *models}, kind
        assert entry["default_option"] in entry["module_list"] and entry["default_model"] in entry["model_list"], kind


def test_favicon_is_served(server):
    url, _ = server
    page = requests.get(url + "/").text
    assert 'rel="icon"' in page
    for path in ("/favicon.ico", "/static/favicon.svg"):
        r = requests.get(url + path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
