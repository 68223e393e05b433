"""`controlnet serve` on a FLUX.1 Control base (issue 21 §2): a Canny/Depth-dev-shaped folder, or a plain
Flux folder with `--control-lora`, takes its hint per request as `control_image` (base64); the picture equals
`controlnet generate --control-image`'s for the same seed, and a missing or bad image, or one sent to a base
that takes none, is a 422 naming `control_image`. Tiny random models over loopback."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import requests
from safetensors.torch import save_file

from bad_input_tools import run_cli
from controlnet.pipeline.flux import FluxBase
from controlnet.web.cost import StepCost
from controlnet.web.guard import Limits
from dit_bases import save_flux_base
from serve_tools import b64png, body, decode, running_server
from test_flux_control_lora import random_control_lora
from tiny_models import random_hint

SIZE = 64


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A FLUX.1 Control folder, a plain Flux folder and a Control LoRA for it, a hint."""
    root = tmp_path_factory.mktemp("serve-flux-control")
    save_flux_base(root / "control", in_channels=32, out_channels=16, seed=11)
    save_flux_base(root / "flux")
    save_file(random_control_lora(FluxBase.from_pretrained(root / "flux").transformer), root / "lora.safetensors")
    random_hint(SIZE, SIZE, seed=4).save(root / "hint.png")
    (root / "out").mkdir()
    return root


SERVED = {"control": ("control", None), "lora": ("flux", "lora.safetensors"), "plain": ("flux", None)}


@pytest.fixture(scope="module", params=["control", "lora"])
def server(request, store):
    yield from _serve(store, request.param)


def _serve(store, name: str):
    from controlnet.web.dit_engine import open_engine

    folder, lora = SERVED[name]
    engine = open_engine(str(store / folder), control_lora=None if lora is None else store / lora)
    with running_server(Limits(step_cost=StepCost()), served=engine) as (url, _):
        yield name, url


def request(**extra) -> dict:
    return body(units=[], seed=7, steps=2, width=SIZE, height=SIZE, cfg_scale=3.5, sampler_name="Euler", **extra)


def _hint(store) -> str:
    return b64png(np.asarray(PIL.Image.open(store / "hint.png").convert("RGB")))


def test_the_picture_equals_generates_for_the_same_seed(server, store, capsys):
    name, url = server
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=request(control_image=_hint(store)))
    assert r.status_code == 200, r.text
    got = decode(r.json()["images"][0])
    folder, lora = SERVED[name]
    argv = ["generate", "--model", store / folder, "--prompt", body()["prompt"], "--control-image", store / "hint.png",
            "--steps", "2", "--seed", "7", "--cfg", "3.5", "--width", SIZE, "--height", SIZE, "-o", store / "out",
            "--no-grid", *(["--control-lora", store / lora] if lora else [])]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert np.array_equal(got, np.asarray(PIL.Image.open(out.strip().splitlines()[-1]).convert("RGB")))
    other = b64png(255 - np.asarray(PIL.Image.open(store / "hint.png").convert("RGB")))
    moved = requests.post(f"{url}/sdapi/v1/txt2img", json=request(control_image=other))
    assert moved.status_code == 200 and not np.array_equal(decode(moved.json()["images"][0]), got)  # the hint acts


@pytest.mark.parametrize("image", [None, "", "not base64!", b64png(np.zeros((4, 4), np.uint8))[:20]])
def test_a_missing_or_bad_control_image_is_a_422_naming_it(server, image):
    _, url = server
    extra = {} if image is None else {"control_image": image}
    r = requests.post(f"{url}/sdapi/v1/txt2img", json=request(**extra))
    assert r.status_code == 422 and r.json()["field"] == "control_image", r.text
    if not image:
        assert "send its hint" in r.json()["detail"]


def test_a_control_image_on_a_base_that_takes_none_is_a_422_naming_it(store):
    for _, url in _serve(store, "plain"):
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=request(control_image=_hint(store)))
        assert r.status_code == 422 and r.json()["field"] == "control_image", r.text
        assert "FLUX.1 Control" in r.json()["detail"]
    with running_server(Limits(step_cost=StepCost())) as (url, _):  # the built-in U-Net base
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=body(control_image=_hint(store)))
        assert r.status_code == 422 and r.json()["field"] == "control_image", r.text


def test_a_control_lora_on_a_base_other_than_flux_is_refused(store):
    from controlnet.errors import InputError
    from controlnet.web.dit_engine import open_engine

    with pytest.raises(InputError, match="--control-lora is for a Flux base"):
        open_engine("mini", control_lora=store / "lora.safetensors")


def _browser_missing() -> bool:
    import importlib.util
    import os

    from serve_tools import CHROMIUM, DRIVER

    return importlib.util.find_spec("selenium") is None or not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER))


@pytest.mark.skipif(_browser_missing(), reason="selenium, Debian's chromium and chromium-driver are needed (.ci/run has them)")
def test_the_page_sends_the_control_image(store, tmp_path):
    """The page's "FLUX.1 Control base" box: without a control image the error stands at its control;
    with one, the picture is the API's for the same settings."""
    import base64
    import io

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from serve_tools import headless_chrome

    def generate(driver):
        driver.find_element(By.ID, "generate").click()
        WebDriverWait(driver, 120).until(lambda d: d.find_element(By.ID, "generate").is_enabled())
        return driver.find_element(By.ID, "status").text

    for _, url in _serve(store, "control"):
        with headless_chrome() as browser:
            browser.get(url + "/")
            WebDriverWait(browser, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
            for field, value in (("width", SIZE), ("height", SIZE), ("steps", 2), ("seed", 7), ("cfg", 3.5),
                                 ("prompt", body()["prompt"])):
                box = browser.find_element(By.ID, field)
                box.clear()
                box.send_keys(str(value))
            assert generate(browser).startswith("Control image:")
            assert browser.find_element(By.ID, "control-image-error").is_displayed()
            browser.find_element(By.ID, "control-image").send_keys(str(store / "hint.png"))
            assert generate(browser) == "done"
            src = browser.find_element(By.CSS_SELECTOR, "#gallery img.output").get_attribute("src")
            got = np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=request(control_image=_hint(store)))
        assert r.status_code == 200, r.text
        assert np.array_equal(got, decode(r.json()["images"][0]))
