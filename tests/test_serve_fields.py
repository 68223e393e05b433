"""`controlnet serve`: no A1111 field is dropped silently. Each one either works, is refused (422
naming the field), or is reported in info.warnings; limits are named with the field and the real
limit; seeds run up to 2**32 - 1."""

from __future__ import annotations

import json

import pytest
import requests

from serve_tools import body, running_server, unit


@pytest.fixture(scope="module")
def server():
    from controlnet.web import Limits

    with running_server(Limits(max_side=512, max_batch=4)) as (url, app):
        yield url, app


def post(url, payload, path="/sdapi/v1/txt2img"):
    return requests.post(url + path, json=payload)


# (extra fields, the field the 422 names, words of the message)
REFUSED = {
    "hires fix": ({"enable_hr": True}, "enable_hr", ["hires fix"]),
    "x/y/z plot": ({"script_name": "x/y/z plot", "script_args": [1, 2]}, "script_name", ["scripts are not offered"]),
    "controlnet m2m": ({"script_name": "controlnet m2m"}, "script_name", ["/sdapi/v1/scripts"]),
    "styles": ({"styles": ["cinematic"]}, "styles", ["styles"]),
    "variation seed": ({"subseed": 5, "subseed_strength": 0.3}, "subseed_strength", ["variation seeds"]),
    "face restoration": ({"restore_faces": True}, "restore_faces", ["face restoration"]),
    "tiling": ({"tiling": True}, "tiling", ["tiling"]),
    "refiner": ({"refiner_checkpoint": "sdxl_refiner"}, "refiner_checkpoint", ["refiner"]),
    "another model": ({"override_settings": {"sd_model_checkpoint": "v1-5-pruned.safetensors"}},
                      "override_settings.sd_model_checkpoint", ["serves mini only"]),
    "Karras with Euler a": ({"sampler_name": "Euler a", "scheduler": "Karras"}, "scheduler", ["dpm++ 2m", "automatic"]),
    "Exponential": ({"sampler_name": "Euler a", "scheduler": "Exponential"}, "scheduler", ["'exponential'", "not offered"]),
    "another always-on script": ({"alwayson_scripts": {"ADetailer": {"args": [True]}}}, "alwayson_scripts.ADetailer",
                                 ["only controlnet"]),
    "width not a multiple of 8": ({"width": 100}, "width", ["multiple of 8", "512", "96 or 104"]),
    "height above the limit": ({"height": 1024}, "height", ["[8, 512]"]),
    "batch unit": ({"alwayson_scripts": {"controlnet": {"args": [unit(input_mode="batch")]}}},
                   "alwayson_scripts.controlnet.args[0].input_mode", ["batch"]),
    "loopback unit": ({"alwayson_scripts": {"controlnet": {"args": [unit(loopback=True)]}}},
                      "alwayson_scripts.controlnet.args[0].loopback", ["loopback"]),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_fields_that_would_change_the_picture_are_refused(server, name):
    url, app = server
    extra, field, words = REFUSED[name]
    before = len(app.state.service.queue.jobs())
    r = post(url, {**body(), **extra})
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["field"] == field and field in answer["detail"]
    assert all(w in answer["detail"].lower() for w in words), answer
    assert "16384" not in answer["detail"]  # the limit named is this server's
    assert len(app.state.service.queue.jobs()) == before


def test_defaults_as_webuiapi_sends_them_are_fine(server):
    """Every field at the default a client sends is no request for anything: no refusal, no warning."""
    url, _ = server
    defaults = {"enable_hr": False, "hr_scale": 2, "hr_upscaler": "Latent", "denoising_strength": 0.7, "styles": [],
                "subseed": -1, "subseed_strength": 0.0, "seed_resize_from_h": 0, "seed_resize_from_w": 0,
                "restore_faces": False, "tiling": False, "s_churn": 0, "s_tmax": 0, "s_tmin": 0, "s_noise": 1,
                "override_settings": {}, "override_settings_restore_afterwards": True, "script_args": None,
                "script_name": None, "send_images": True, "save_images": False, "scheduler": "automatic"}
    r = post(url, {**body(steps=1), **defaults, "alwayson_scripts": {"controlnet": {"args": [unit(low_vram=False,
                                                                                              hr_option="Both")]}}})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["warnings"] == []


def test_fields_that_do_not_change_the_picture_are_reported(server):
    url, _ = server
    r = post(url, {**body(steps=1), "s_churn": 0.5, "save_images": True,
                   "override_settings": {"sd_model_checkpoint": "mini", "CLIP_stop_at_last_layers": 2}})
    assert r.status_code == 200, r.text
    warnings = " | ".join(json.loads(r.json()["info"])["warnings"])
    assert "s_churn" in warnings and "save_images" in warnings
    assert "override_settings.CLIP_stop_at_last_layers" in warnings and "sd_model_checkpoint" not in warnings


def test_karras_runs_with_dpmpp_2m(server):
    url, _ = server
    r = post(url, {**body(steps=2), "sampler_name": "DPM++ 2M", "scheduler": "Karras"})
    assert r.status_code == 200, r.text
    assert "Sampler: DPM++ 2M, Schedule type: Karras" in json.loads(r.json()["info"])["infotexts"][0]


def test_no_script_is_advertised_and_options_say_what_they_ignore(server):
    url, _ = server
    assert requests.get(url + "/sdapi/v1/scripts").json() == {"txt2img": [], "img2img": []}
    r = post(url, {"sd_model_checkpoint": "mini", "CLIP_stop_at_last_layers": 2}, "/sdapi/v1/options")
    assert r.status_code == 200 and "CLIP_stop_at_last_layers" in r.json()["warnings"][0]


def test_seed_runs_up_to_2_32_minus_1_and_wraps(server):
    url, _ = server
    r = post(url, {**body(steps=1, seed=2**32 - 1), "batch_size": 2})
    assert r.status_code == 200, r.text
    assert json.loads(r.json()["info"])["all_seeds"] == [2**32 - 1, 0]
    r = post(url, {**body(steps=1, seed=2**32)})
    assert r.status_code == 422 and r.json()["field"] == "seed" and "4294967295" in r.json()["detail"]


def test_img2img_resize_mode_is_applied(server):
    """A1111's img2img resize_mode fits the init image (0 just resize, 1 crop, 2 fill): a wide init
    image gives different pictures."""
    import numpy as np

    from serve_tools import b64png, decode

    url, _ = server
    wide = np.zeros((32, 128, 3), np.uint8)
    wide[:, :64] = (255, 0, 0)
    wide[:, 64:] = (0, 0, 255)
    pictures = []
    for mode in (0, 1):
        r = post(url, {**body(seed=1, steps=4), "init_images": [b64png(wide)], "denoising_strength": 0.5, "resize_mode": mode},
                 "/sdapi/v1/img2img")
        assert r.status_code == 200, r.text
        pictures.append(decode(r.json()["images"][0]))
    assert not np.array_equal(pictures[0], pictures[1])
    r = post(url, {**body(), "init_images": [b64png(wide)], "resize_mode": 9}, "/sdapi/v1/img2img")
    assert r.status_code == 422 and r.json()["field"] == "resize_mode"
    r = post(url, {**body(steps=2), "init_images": [b64png(wide)], "denoising_strength": 0.3}, "/sdapi/v1/img2img")
    assert r.status_code == 422 and r.json()["field"] == "denoising_strength" and "at least 0.5" in r.json()["detail"]


def test_a_units_own_refusal_names_the_unit(server):
    """What ControlUnit refuses in the worker (here advanced_weighting that is not a list) is a 422
    whose `field` is the unit's, as the schema's own refusals are."""
    url, _ = server
    r = post(url, body(units=[unit(advanced_weighting="strong")]))
    assert r.status_code == 422, r.text
    assert r.json().get("field", "").startswith("alwayson_scripts.controlnet.args[0]"), r.json()


def test_client_keys_sent_back_are_safe_text(server):
    """A key holding a lone surrogate is refused when the body is read (422 naming where it is), never
    echoed into a warning or a field name as a 500."""
    url, _ = server
    r = requests.post(url + "/sdapi/v1/txt2img", data=json.dumps({**body(), "alwayson_scripts": {"\ud800x": {}}}),
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["field"].startswith("alwayson_scripts"), r.text
    r = requests.post(url + "/sdapi/v1/options", data=json.dumps({"\ud800": 1}), headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "surrogate" in r.json()["detail"], r.text
