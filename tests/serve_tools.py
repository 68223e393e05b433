"""A `controlnet serve` app running in this process on a free loopback port, for the serve tests.

The engine (the built-in mini model) is loaded once per test session and shared; each test module
starts its own server with the limits it needs, one at a time (one worker uses the engine).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import shutil
import threading
import time

import numpy as np
import pytest

from ports import bound_socket

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install -e '.[serve]')")


@functools.cache
def engine():
    from controlnet.web.engine import Engine

    return Engine("mini")


@contextlib.contextmanager
def running_server(limits=None, auth=None, origins=None, served=None):
    """Yields (base URL, app) of a server started on a free port (on the `served` engine, else the
    shared mini one); stopped (worker included) on exit. The server listens on the socket bound here,
    so no other test process can take its port meanwhile."""
    from controlnet.web import create_app
    from controlnet.web.server import make_server

    app = create_app(served or engine(), limits, auth, origins)
    sock = bound_socket()
    port = sock.getsockname()[1]
    server = make_server(app, "127.0.0.1", port)
    thread = threading.Thread(target=server.run, args=([sock],), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextlib.contextmanager
def headless_chrome():
    """Debian's chromium, headless, through selenium (a driver path: Selenium Manager downloads nothing)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--window-size=1280,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def square(size: int = 64, box=(16, 48), colour=(255, 0, 0)) -> np.ndarray:
    """A coloured square on black: its canny map is the square's outline."""
    img = np.zeros((size, size, 3), np.uint8)
    img[box[0]:box[1], box[0]:box[1]] = colour
    return img


def b64png(array: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> np.ndarray:
    from PIL import Image

    return np.array(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def body(seed: int = 1, steps: int = 2, units=(), **extra) -> dict:
    """A small txt2img request on the mini model (64×64)."""
    return {"prompt": "a red square on a blue background", "seed": seed, "steps": steps, "width": 64, "height": 64,
            "cfg_scale": 5, "sampler_name": "DDIM", "alwayson_scripts": {"controlnet": {"args": list(units)}}, **extra}


def unit(image=None, module="canny", model="mini-edges", **extra) -> dict:
    return {"enabled": True, "image": b64png(square() if image is None else image), "module": module, "model": model, **extra}
