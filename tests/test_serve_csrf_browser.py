"""CSRF in a real browser: a page of another site (here: another port) that the user visits tries to
start jobs on `controlnet serve` the three ways a page can — a "simple" no-cors fetch with a
text/plain body (no preflight), a JSON fetch (preflight), an auto-submitted text/plain form — and
none of them reaches the queue. (The server's own page: tests/test_serve_browser.py.)"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading

from serve_tools import running_server
from test_serve_browser import chrome, pytestmark  # noqa: F401 - headless chromium, skipped where it is missing

EVIL_PAGE = """<!doctype html><html><body>
<form id="f" method="POST" action="TARGET/jobs/txt2img" enctype="text/plain" target="sink">
<input name='{"prompt": "csrf form", "steps": 2, "width": 64, "height": 64, "x": "' value='"}'></form>
<iframe name="sink" id="sink"></iframe>
<script>
const job = JSON.stringify({prompt: "csrf fetch", steps: 2, width: 64, height: 64}), results = {};
const attempt = (name, options) => fetch("TARGET/jobs/txt2img", {method: "POST", body: job, ...options})
  .then(r => { results[name] = "answered " + r.type; }, () => { results[name] = "blocked"; });
Promise.all([attempt("simple", {mode: "no-cors", headers: {"Content-Type": "text/plain"}}),
             attempt("json", {headers: {"Content-Type": "application/json"}})]).then(() => {
  document.getElementById("sink").onload = () => { document.body.dataset.results = JSON.stringify(results); };
  document.getElementById("f").submit();
});
</script></body></html>"""


@contextlib.contextmanager
def other_site(html: str):
    """Serves one page on another loopback port: another origin, as any web site is."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_another_sites_page_cannot_start_jobs(chrome):  # noqa: F811 - the fixture imported above
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with running_server() as (url, app), other_site(EVIL_PAGE.replace("TARGET", url)) as evil:
        chrome.get(evil)
        WebDriverWait(chrome, 60).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-results"))
        results = json.loads(chrome.find_element(By.TAG_NAME, "body").get_attribute("data-results"))
        assert results == {"simple": "answered opaque", "json": "blocked"}, results  # the preflight was refused
        assert app.state.service.queue.jobs() == []  # neither the fetches nor the form started anything
