"""`controlnet serve`'s page in a real browser (Debian's chromium, headless, no network access
needed): upload a condition, pick a Control Type, preview canny, generate with the built-in model,
see the image and the condition map; stale and failed previews; the recommended settings; errors
at their controls; the results history; the inpaint mask; a phone's width and a laptop's height.
CONTROLNET_UPDATE_SCREENSHOT=1 also writes docs/serve.png."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from serve_tools import CHROMIUM, DRIVER, headless_chrome, running_server, square

webdriver = pytest.importorskip("selenium.webdriver", reason="the serve extra is not installed (selenium)")
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                reason="Debian's chromium and chromium-driver are not installed "
                                       "(apt-get install -y chromium chromium-driver; .ci/run does)")
DOCS = Path(__file__).resolve().parents[1] / "docs"
PHONE_WIDTHS = (375, 414)


@pytest.fixture(scope="module")
def server():
    with running_server() as (url, _):
        yield url


@pytest.fixture(scope="module")
def chrome():
    with headless_chrome() as driver:
        yield driver


@pytest.fixture
def page(chrome, server):
    """A freshly loaded page (its lists read from the server) at the desktop size; -> (driver, url)."""
    from selenium.webdriver.support.ui import WebDriverWait

    _screen(chrome, 1280, 1500)
    chrome.get(server + "/")
    WebDriverWait(chrome, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    return chrome, server


def _screen(driver, width, height, mobile=False):
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})


def _wait(driver, predicate, timeout=60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(predicate)


def _png(tmp_path, name, array) -> str:
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(array).save(path)
    return str(path)


def _decode(data_url: str) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def _set(driver, field, value):
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, field)
    box.clear()
    box.send_keys(value)


def _value(driver, field):
    return driver.execute_script("return document.getElementById(arguments[0]).value", field)


def _generate(driver):
    """Clicks Generate and waits until it is enabled again; -> the status text."""
    from selenium.webdriver.common.by import By

    driver.find_element(By.ID, "generate").click()
    _wait(driver, lambda d: d.find_element(By.ID, "generate").is_enabled())
    return driver.find_element(By.ID, "status").text


def test_page_preview_generate_gallery(page, tmp_path):
    """Control Type "Canny" picks its preprocessor and model; pixel perfect is on by default, so
    a 64-px drawing gives its full outline (at 512 it was a few pixels); generate shows image and map."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from controlnet.annotators import annotate

    browser, url = page
    find = browser.find_element
    find(By.ID, "unit0-image").send_keys(_png(tmp_path, "drawing.png", square()))
    assert find(By.ID, "unit0-enabled").is_selected()  # choosing an image enables the unit
    assert find(By.ID, "unit0-pixel-perfect").is_selected()  # on by default
    Select(find(By.ID, "unit0-type")).select_by_visible_text("Canny")
    canny = requests.get(url + "/controlnet/control_types").json()["control_types"]["Canny"]
    assert [o.get_attribute("value") for o in Select(find(By.ID, "unit0-module")).options] == canny["module_list"]
    assert (_value(browser, "unit0-module"), _value(browser, "unit0-model")) == (canny["default_option"], canny["default_model"])
    find(By.ID, "unit0-preview-btn").click()
    _wait(browser, lambda d: "ready" in d.find_element(By.ID, "unit0-preview").get_attribute("class"))
    preview = _decode(find(By.ID, "unit0-preview").get_attribute("src"))
    assert np.array_equal(preview, annotate("canny", square(), 64))  # the picture's own size
    for field, value in (("steps", "4"), ("seed", "7"), ("prompt", "a red square on a blue background")):
        _set(browser, field, value)
    assert _generate(browser) == "done"
    outputs = browser.find_elements(By.CSS_SELECTOR, "#gallery img.output")
    maps = browser.find_elements(By.CSS_SELECTOR, "#gallery img.map")
    assert len(outputs) == 1 and len(maps) == 1
    links = browser.find_elements(By.CSS_SELECTOR, "#gallery a[download]")
    assert links[0].get_attribute("href").startswith("data:image/png;base64,")
    edge = _decode(maps[0].get_attribute("src"))
    assert edge.max() == 255 and edge[32, 32].max() == 0  # the square's outline, empty inside
    _screen(browser, 1280, 960)
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "serve.png"))
    if os.environ.get("CONTROLNET_UPDATE_SCREENSHOT") == "1":
        shutil.copy(tmp_path / "serve.png", DOCS / "serve.png")


def test_stale_and_failed_previews_history_and_reuse_seed(page, tmp_path):
    """A preview belongs to the image and settings it was made from: a new picture removes it (the
    job then never runs on the old map), a failed preview leaves no map and says why at the unit.
    Each run goes on top of a labelled history; "reuse seed" puts an image's seed in the form."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from controlnet.annotators import annotate

    browser, _ = page
    find = browser.find_element
    a, b = square(), square(box=(4, 28), colour=(0, 255, 0))
    find(By.ID, "unit0-image").send_keys(_png(tmp_path, "a.png", a))
    Select(find(By.ID, "unit0-type")).select_by_visible_text("Canny")
    preview_ready = lambda d: "ready" in d.find_element(By.ID, "unit0-preview").get_attribute("class")  # noqa: E731
    find(By.ID, "unit0-preview-btn").click()
    _wait(browser, preview_ready)
    find(By.ID, "unit0-use-preview").click()
    find(By.ID, "unit0-image").send_keys(_png(tmp_path, "b.png", b))  # picture B: A's map is stale
    _wait(browser, lambda d: not d.find_element(By.ID, "unit0-preview").get_attribute("src"))
    use = find(By.ID, "unit0-use-preview")
    assert not use.is_selected() and not use.is_enabled()
    find(By.ID, "unit0-preview-btn").click()
    _wait(browser, preview_ready)
    use.click()
    _set(browser, "steps", "2")
    _set(browser, "seed", "21")
    assert _generate(browser) == "done"
    used = _decode(browser.find_element(By.CSS_SELECTOR, "#gallery img.map").get_attribute("src"))
    assert np.array_equal(used, annotate("canny", b, 64))  # B's map, not A's
    # a failed preview: no map left on screen, the error at the unit in the page's words
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not a picture")
    find(By.ID, "unit0-image").send_keys(str(broken))
    find(By.ID, "unit0-preview-btn").click()
    _wait(browser, lambda d: "error" in d.find_element(By.ID, "unit0-status").get_attribute("class"))
    message = find(By.ID, "unit0-status").text
    assert message.startswith("Unit 0 condition image:") and "controlnet_" not in message
    assert not find(By.ID, "unit0-preview").get_attribute("src") and not find(By.ID, "unit0-use-preview").is_enabled()
    # the history: a second run on top, both labelled; reuse seed
    find(By.ID, "unit0-enabled").click()
    _set(browser, "seed", "-1")
    assert _generate(browser) == "done"
    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#gallery .run-label")]
    assert len(labels) == 2 and labels[0].startswith("#2 txt2img") and labels[1].startswith("#1 txt2img") and "mini-edges" in labels[1]
    first = browser.find_elements(By.CSS_SELECTOR, "#gallery .run")[1].find_element(By.CSS_SELECTOR, ".reuse-seed")
    first.click()
    assert _value(browser, "seed") == "21"


def test_recommended_settings_and_errors_at_their_controls(page, tmp_path):
    """The form shows what the API would use for a value left out: the enabled units' ControlNets'
    recommended.json (CFG 2, weight 2, Euler a for the edges model), until the user changes a value.
    An error names the page's control ("Unit 0 weight"), not the API's path, and stands beside it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser, url = page
    config = requests.get(url + "/config").json()
    edges, depth = (next(t for t in config["recommended"] if t.startswith(name)) for name in ("mini-edges", "mini-depth"))
    rec = config["recommended"][edges]
    defaults = config["defaults"]
    assert (float(_value(browser, "cfg")), _value(browser, "sampler")) == (defaults["cfg_scale"], defaults["sampler_name"])
    find = browser.find_element
    Select(find(By.ID, "unit0-model")).select_by_value(edges)
    find(By.ID, "unit0-enabled").click()
    assert (float(_value(browser, "cfg")), _value(browser, "sampler")) == (rec["cfg_scale"], rec["sampler_name"])
    assert float(_value(browser, "unit0-weight")) == rec["weight"]
    _set(browser, "cfg", "5")  # the user's value stays
    Select(find(By.ID, "unit0-model")).select_by_value(depth)
    assert _value(browser, "cfg") == "5" and _value(browser, "sampler") == config["recommended"][depth]["sampler_name"]
    # errors: an enabled unit without its image, then a weight out of range
    assert _generate(browser) != "done"
    status = find(By.ID, "status").text
    assert status.startswith("Unit 0 condition image:") and "alwayson_scripts" not in status
    assert find(By.ID, "unit0-image-error").text == status and "invalid" in find(By.ID, "unit0-image").get_attribute("class")
    find(By.ID, "unit0-image").send_keys(_png(tmp_path, "drawing.png", square()))
    _set(browser, "unit0-weight", "3")
    _generate(browser)
    assert find(By.ID, "unit0-weight-error").text.startswith("Unit 0 weight: must be in [0, 2]")
    assert not browser.find_elements(By.ID, "unit0-image-error")  # the old error went
    # a disabled Generate looks disabled
    colours = browser.execute_script("""const g = document.getElementById('generate'), c = () => getComputedStyle(g).backgroundColor;
        const on = c(); g.disabled = true; const off = c(); g.disabled = false; return [on, off];""")
    assert colours[0] != colours[1]


def test_inpaint_mask_drawn_on_the_page(page, tmp_path):
    """An init image makes it img2img; the mask drawn over it goes as A1111's `mask`: a PNG of the
    init image's size, white where drawn (repaint), black elsewhere; an uploaded mask goes as it is."""
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    browser, _ = page
    find = browser.find_element
    find(By.CSS_SELECTOR, "#img2img summary").click()
    find(By.ID, "init-image").send_keys(_png(tmp_path, "init.png", square()))
    _wait(browser, lambda d: d.execute_script("return document.getElementById('mask-canvas').width") == 64)
    canvas = find(By.ID, "mask-canvas")
    size = canvas.size["width"]
    ActionChains(browser).move_to_element_with_offset(canvas, -size // 4, -size // 4).click_and_hold() \
        .move_by_offset(size // 8, 0).move_by_offset(0, size // 8).release().perform()  # top-left quarter
    _set(browser, "steps", "2")
    browser.execute_script("""window.sent = []; const f = window.fetch;
        window.fetch = (u, o) => { if (o && o.body) window.sent.push([u, o.body]); return f(u, o); };""")
    text = _generate(browser)
    path, sent = browser.execute_script("return window.sent[0]")
    body = json.loads(sent)
    assert path == "/jobs/img2img" and body["init_images"] and body["denoising_strength"] == 0.75
    mask = np.array(Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L"))
    assert mask.shape == (64, 64)
    drawn = mask > 127
    assert drawn[:32, :32].sum() > 20 and not drawn[32:, :].any() and not drawn[:, 32:].any()
    # an uploaded mask replaces the drawing and goes as it is
    uploaded = np.zeros((64, 64, 3), np.uint8)
    uploaded[40:, 40:] = 255
    find(By.ID, "clear-mask").click()
    find(By.ID, "inpaint-mask").send_keys(_png(tmp_path, "mask.png", uploaded))
    _wait(browser, lambda d: d.execute_script("return state.maskDrawn"))
    second = _generate(browser)
    body = json.loads(browser.execute_script("return window.sent[window.sent.length - 1][1]"))
    assert np.array_equal(np.array(Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("RGB")), uploaded)
    if "not supported" in text:
        pytest.skip(f"this branch's server does not inpaint yet: {text}")
    assert text == second == "done" and browser.find_elements(By.CSS_SELECTOR, "#gallery img.output")
    assert browser.find_element(By.CSS_SELECTOR, "#gallery .run-label").text.startswith("#2 img2img")


@pytest.mark.parametrize("width", PHONE_WIDTHS)
def test_phone_width(chrome, server, width):
    """On a phone nothing is wider than the screen, and Preview, End, Seed, Batch count and the
    status/error text are on it."""
    from selenium.webdriver.common.by import By

    _screen(chrome, width, 800, mobile=True)
    chrome.get(server + "/")
    _wait(chrome, lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    chrome.find_element(By.ID, "unit0-enabled").click()
    chrome.find_element(By.ID, "generate").click()  # an error: an enabled unit without its image
    _wait(chrome, lambda d: d.find_element(By.ID, "status").text)
    view = chrome.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert view[1] == width and view[0] <= view[1], f"the page is {view[0]} px wide on a {width} px screen"
    for field in ("unit0-preview-btn", "unit0-end", "seed", "n_iter", "status", "unit0-status", "unit0-image-error"):
        left, right = chrome.execute_script("const r = document.getElementById(arguments[0]).getBoundingClientRect();"
                                            "return [r.left, r.right]", field)
        assert 0 <= left and right <= width and right > left, f"{field} spans {left}..{right} on a {width} px screen"


def test_laptop_screen(chrome, server):
    """At 1366×768 Generate is in view: units after the first stay folded until used."""
    from selenium.webdriver.common.by import By

    _screen(chrome, 1366, 768)
    chrome.get(server + "/")
    _wait(chrome, lambda d: d.execute_script("return document.body.dataset.ready") == "1")
    bottom, height = chrome.execute_script("return [document.getElementById('generate').getBoundingClientRect().bottom,"
                                           " window.innerHeight]")
    assert bottom <= height
    units = chrome.find_elements(By.CSS_SELECTOR, "#units details.unit")
    assert [u.get_attribute("open") is not None for u in units] == [True] + [False] * (len(units) - 1)
