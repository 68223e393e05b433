"""`controlnet serve`'s page in a real browser (Debian's chromium, headless, no network access
needed): upload a condition, preview canny, generate with the built-in model, see the image and
the condition map. CONTROLNET_UPDATE_SCREENSHOT=1 also writes docs/serve.png."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from serve_tools import running_server, square

webdriver = pytest.importorskip("selenium.webdriver", reason="the serve extra is not installed (selenium)")
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                reason="Debian's chromium and chromium-driver are not installed "
                                       "(apt-get install -y chromium chromium-driver; .ci/run does)")
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1280,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)  # a driver path: Selenium Manager downloads nothing
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_page_preview_generate_gallery(browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    condition = tmp_path / "drawing.png"
    Image.fromarray(square()).save(condition)
    wait = WebDriverWait(browser, 60)
    with running_server() as (url, _):
        browser.get(url + "/")
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        find = browser.find_element
        find(By.ID, "unit0-image").send_keys(str(condition))
        assert find(By.ID, "unit0-enabled").is_selected()  # choosing an image enables the unit
        Select(find(By.ID, "unit0-module")).select_by_value("canny")
        find(By.ID, "unit0-pixel-perfect").click()  # detect at the output size (64 px), as A1111
        Select(find(By.ID, "unit0-model")).select_by_index(0)
        find(By.ID, "unit0-preview-btn").click()
        wait.until(lambda d: "ready" in d.find_element(By.ID, "unit0-preview").get_attribute("class"))
        for field, value in (("steps", "4"), ("seed", "7"), ("prompt", "a red square on a blue background")):
            find(By.ID, field).clear()
            find(By.ID, field).send_keys(value)
        find(By.ID, "generate").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery img.map"))
        outputs = browser.find_elements(By.CSS_SELECTOR, "#gallery img.output")
        maps = browser.find_elements(By.CSS_SELECTOR, "#gallery img.map")
        assert len(outputs) == 1 and len(maps) == 1
        assert find(By.ID, "status").text == "done"
        links = browser.find_elements(By.CSS_SELECTOR, "#gallery a[download]")
        assert links[0].get_attribute("href").startswith("data:image/png;base64,")
        edge = _decode(maps[0].get_attribute("src"))
        assert edge.max() == 255 and edge[32, 32].max() == 0  # the square's outline, empty inside
        browser.execute_script("window.scrollTo(0, 0)")
        browser.save_screenshot(str(tmp_path / "serve.png"))
    if os.environ.get("CONTROLNET_UPDATE_SCREENSHOT") == "1":
        shutil.copy(tmp_path / "serve.png", DOCS / "serve.png")


def _decode(data_url: str) -> np.ndarray:
    import base64
    import io

    from PIL import Image

    return np.array(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))
