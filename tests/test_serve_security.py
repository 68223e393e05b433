"""`controlnet serve` against the web pages its user visits and against its other users: no other
site can drive it (CSRF: Origin and Content-Type), no other name can reach a loopback server (DNS
rebinding: Host), no user sees another's jobs, and no answer shows the server's paths."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from serve_tools import body, engine, running_server, unit

ALICE, BOB = ("alice", "a-pass"), ("bob", "b-pass")
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def server():
    from controlnet.web import Limits, Origins

    origins = Origins.from_flags("http://app.example:3000", r"https://.*\.trusted\.example", host="mybox")
    with running_server(Limits(queue_size=4), auth=dict([ALICE, BOB]), origins=origins) as (url, app):
        yield url, app


def _port(url: str) -> str:
    return url.rsplit(":", 1)[1]


def _wait(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# ------------------------------------------------------------------ CSRF


@pytest.mark.parametrize("content_type, origin, status, field", [
    ("text/plain", EVIL, 403, "Origin"),  # what any page can send with no preflight
    ("application/x-www-form-urlencoded", EVIL, 403, "Origin"),
    ("application/json", EVIL, 403, "Origin"),
    ("text/plain", "null", 403, "Origin"),  # sandboxed frames, file:// pages
    ("text/plain", None, 415, "Content-Type"),  # no Origin (an old browser, a script): the body type still counts
    ("application/x-www-form-urlencoded", None, 415, "Content-Type"),
    (None, None, 415, "Content-Type"),
    ("application/json; charset=latin-1", None, 415, "Content-Type"),
])
def test_cross_site_requests_cannot_drive_the_server(server, content_type, origin, status, field):
    url, app = server
    before = len(app.state.service.queue.jobs())
    headers = {k: v for k, v in (("Content-Type", content_type), ("Origin", origin)) if v is not None}
    for path in ("/jobs/txt2img", "/sdapi/v1/txt2img", "/controlnet/detect", "/sdapi/v1/options"):
        r = requests.post(url + path, data=json.dumps(body()), headers=headers, auth=ALICE)
        assert r.status_code == status, (path, r.text)
        assert r.json()["field"] == field and field in r.json()["detail"], r.text
    assert len(app.state.service.queue.jobs()) == before  # nothing was queued


def test_cross_site_interrupt_refused(server):
    url, _ = server
    for path in ("/sdapi/v1/interrupt", "/sdapi/v1/skip", "/jobs/0123/interrupt"):
        r = requests.post(url + path, headers={"Origin": EVIL}, auth=ALICE)
        assert r.status_code == 403 and "--cors-allow-origins" in r.json()["detail"], (path, r.text)
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_own_page_and_plain_clients_keep_working(server, host):
    """The page's fetches are same-origin (Origin = the address it was served from) with JSON bodies."""
    url, _ = server
    own = f"http://{host}:{_port(url)}"
    r = requests.post(own + "/jobs/txt2img", json=body(), headers={"Origin": own}, auth=ALICE)
    assert r.status_code == 202, r.text
    _wait(lambda: requests.get(f"{own}/jobs/{r.json()['job_id']}", auth=ALICE).json()["state"] == "done")
    r = requests.post(own + "/sdapi/v1/txt2img", json=body(), headers={"Origin": own, "Content-Type": "application/json; charset=UTF-8"},
                      auth=ALICE)
    assert r.status_code == 200 and len(r.json()["images"]) == 1, r.text
    assert requests.post(url + "/sdapi/v1/txt2img", json=body(), auth=ALICE).status_code == 200  # no Origin: curl, webuiapi


@pytest.mark.parametrize("origin", ["http://app.example:3000", "https://ui.trusted.example"])
def test_allowed_origin_gets_cors_headers_and_preflight(server, origin):
    url, _ = server
    pre = requests.options(url + "/jobs/txt2img", headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                           "Access-Control-Request-Headers": "authorization, content-type"})
    assert pre.status_code == 200, pre.text  # no credentials: browsers send none with a preflight
    assert pre.headers["Access-Control-Allow-Origin"] == origin and "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "content-type" in pre.headers["Access-Control-Allow-Headers"].lower()
    r = requests.post(url + "/jobs/txt2img", json=body(), headers={"Origin": origin}, auth=ALICE)
    assert r.status_code == 202 and r.headers["Access-Control-Allow-Origin"] == origin, r.text
    assert "X-Job-Id" in r.headers["Access-Control-Expose-Headers"] and r.headers["Access-Control-Allow-Credentials"] == "true"
    requests.post(f"{url}/jobs/{r.json()['job_id']}/interrupt", auth=ALICE)


@pytest.mark.parametrize("origin", [EVIL, "http://app.example:3001", "https://trusted.example.evil.example",
                                    "http://ui.trusted.example"])
def test_other_origins_get_no_preflight(server, origin):
    url, _ = server
    pre = requests.options(url + "/jobs/txt2img", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers, pre.text


def test_bad_cors_flags_are_refused():
    from controlnet.errors import InputError
    from controlnet.web import Origins

    with pytest.raises(InputError, match="--cors-allow-origins.*'app.example/path'"):
        Origins.from_flags("http://ok.example,app.example/path")
    with pytest.raises(InputError, match="--cors-allow-origins-regex"):
        Origins.from_flags(None, "https://(")
    assert Origins.from_flags("*").allows("http://anything.example")


# ------------------------------------------------------------------ DNS rebinding


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost.evil.example", "0x7f.1", "[::1"])
def test_loopback_server_refuses_other_host_names(server, host):
    """A page on evil.example re-pointed at 127.0.0.1 reaches the server with Host: evil.example."""
    url, app = server
    for method, path in (("get", "/"), ("get", "/config"), ("post", "/jobs/txt2img")):
        r = getattr(requests, method)(url + path, json=body(), auth=ALICE, headers={"Host": f"{host}:{_port(url)}"})
        assert r.status_code == 403 and r.json()["field"] == "Host", (path, r.text)
        assert "DNS rebinding" in r.json()["detail"] and f"http://127.0.0.1:{_port(url)}/" in r.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "127.0.0.2", "mybox", "app.localhost",
                                  "this machine"])
def test_loopback_names_and_the_configured_host_are_answered(server, host):
    import socket

    url, _ = server
    host = socket.gethostname() if host == "this machine" else host
    for port in (f":{_port(url)}", ":80", ""):  # any port: a proxy or a tunnel may forward another one
        r = requests.get(url + "/config", auth=ALICE, headers={"Host": host + port})
        assert r.status_code == 200, (host + port, r.text)


# ------------------------------------------------------------------ one user's jobs


def test_users_see_only_their_own_jobs(server):
    url, app = server
    queue = app.state.service.queue
    mine = requests.post(url + "/jobs/txt2img", json=body(seed=5, steps=150, prompt="alice's secret prompt"), auth=ALICE).json()["job_id"]
    _wait(lambda: queue.current is not None and queue.current.id == mine and queue.current.step > 0)

    assert requests.get(f"{url}/jobs/{mine}", auth=BOB).status_code == 404
    assert requests.post(f"{url}/jobs/{mine}/interrupt", auth=BOB).status_code == 404
    progress = requests.get(url + "/sdapi/v1/progress", auth=BOB)
    assert progress.json()["state"]["job"] == "" and mine not in progress.text and progress.json()["progress"] == 0
    assert requests.post(url + "/sdapi/v1/interrupt", auth=BOB).json() == {"interrupted": None}
    time.sleep(0.3)
    assert queue.current is not None and queue.current.id == mine and not queue.current.stop.is_set()  # still running

    assert requests.get(url + "/sdapi/v1/progress", auth=ALICE).json()["state"]["job"] == mine
    assert requests.post(url + "/sdapi/v1/interrupt", auth=ALICE).json() == {"interrupted": mine}
    _wait(lambda: requests.get(f"{url}/jobs/{mine}", auth=ALICE).json()["state"] == "interrupted")
    assert requests.get(f"{url}/jobs/{mine}", auth=BOB).status_code == 404  # finished: the pictures stay Alice's

    done = requests.post(url + "/sdapi/v1/txt2img", json=body(), auth=ALICE)
    job_id = done.headers["X-Job-Id"]
    assert requests.get(f"{url}/jobs/{job_id}", auth=ALICE).json()["state"] == "done"
    other = requests.get(f"{url}/jobs/{job_id}", auth=BOB)
    assert other.status_code == 404 and "secret" not in other.text and other.json()["field"] == "job_id"


# ------------------------------------------------------------------ paths


def _server_paths() -> list[str]:
    eng = engine()
    paths = {Path(eng.model_path), *map(Path, eng.controlnets.values())}
    return sorted({str(p.resolve()) for p in paths} | {str(p.resolve().parent) for p in paths})


def _get_routes(app) -> list[str]:
    """The GET routes without parameters: the page's, and the API's from the app's OpenAPI schema."""
    schema = app.openapi()["paths"]
    return ["/", "/config", "/openapi.json"] + [p for p, methods in schema.items() if "get" in methods and "{" not in p]


def test_no_answer_shows_the_servers_paths(server):
    """Every GET route without parameters, a generation, a detection and an error: names, never paths."""
    url, app = server
    texts = {}
    for path in _get_routes(app):
        r = requests.get(url + path, auth=ALICE)
        assert r.status_code == 200, path
        texts[path] = r.text
    generated = requests.post(url + "/sdapi/v1/txt2img", json=body(units=[unit()]), auth=ALICE).json()
    texts["txt2img"] = json.dumps({"parameters": generated["parameters"], "info": generated["info"]})
    texts["bad model"] = requests.post(url + "/sdapi/v1/txt2img", json=body(units=[unit(model="nope")]), auth=ALICE).text
    assert "/sdapi/v1/sd-models" in texts and json.loads(texts["/sdapi/v1/sd-models"])[0]["filename"] == "mini"
    for where, text in texts.items():
        for path in _server_paths():
            assert path not in text, (where, path)


@pytest.mark.parametrize("message, shown", [
    ("/tmp/models/bad.safetensors: truncated", "bad.safetensors: truncated"),
    ("[Errno 2] No such file or directory: '/usr/lib/nothing/x.so'", "[Errno 2] No such file or directory: 'x.so'"),
    ("PosixPath('/home/someone/cn/') (a folder)", "PosixPath('cn') (a folder)"),
    ("GET /controlnet/model_list lists them; /sdapi/v1/samplers too", None),  # API routes stay
    ("data:image/png;base64, http://host/usr/x, a 1/2 chance, ~/x, /nosuchroot/x", None),
])
def test_messages_name_files_not_paths(message, shown):
    from controlnet.web.guard import hide_paths

    assert hide_paths(message) == (shown or message)


def test_a_broken_checkpoint_is_named_by_its_file(server, tmp_path, monkeypatch):
    """A ControlNet in --controlnet-dir that cannot be loaded: 422 naming the unit's model field and
    the file's name, not the folder it lives in."""
    url, _ = server
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint" * 64)
    monkeypatch.setitem(engine().controlnets, "broken", broken)
    monkeypatch.setitem(engine().hashes, "broken", "00000000")
    r = requests.post(url + "/sdapi/v1/txt2img", json=body(units=[unit(model="broken")]), auth=ALICE)
    job = requests.post(url + "/jobs/txt2img", json=body(units=[unit(model="broken")]), auth=ALICE).json()["job_id"]
    _wait(lambda: requests.get(f"{url}/jobs/{job}", auth=ALICE).json()["state"] == "failed")
    for answer in (r.json(), requests.get(f"{url}/jobs/{job}", auth=ALICE).json()["error"]):
        assert answer["field"] == "alwayson_scripts.controlnet.args[0].model", answer
        assert "broken.safetensors" in answer["detail"] and str(tmp_path) not in answer["detail"], answer
