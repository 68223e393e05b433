"""`controlnet serve`: one request must never take the server away from everyone else.

Admission by estimated cost (a measured step cost, injected here so the tests do not depend on this
machine's speed) and by prompt length; an interrupt that lands inside a step and inside prompt
encoding; job states after interrupt / cancel / abandon; shutdown with a job running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from ports import free_port
from serve_tools import body, engine, running_server, unit

ROOT = Path(__file__).resolve().parents[1]


def _limits(**kw):
    from controlnet.web import Limits
    from controlnet.web.cost import StepCost

    # 1 µs per latent pixel per network forward: 64×64 costs nothing, 2048×2048 × 150 steps × 8 is hours
    return Limits(**{"step_cost": StepCost(a=1e-6), "max_job_seconds": 30.0, **kw})


def _wait(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _generation(**kw):
    from controlnet.web import schema

    return schema.parse_generation("txt2img", body(**kw), engine(), _limits())


# ---------------------------------------------------------------------------------------- admission


def test_estimate_grows_with_every_factor():
    from controlnet.web.cost import StepCost, estimate_seconds

    cost = StepCost(a=1e-6, b=1e-12)
    base = estimate_seconds(_generation(steps=10, cfg_scale=5), cost, 8)
    bigger = [dict(width=128), dict(steps=20), dict(batch_size=2), dict(n_iter=2), dict(units=[unit()])]
    for change in bigger:
        assert estimate_seconds(_generation(**{"steps": 10, "cfg_scale": 5, **change}), cost, 8) > 1.5 * base, change
    assert estimate_seconds(_generation(steps=10, cfg_scale=1), cost, 8) < 0.6 * base  # no CFG: half the U-Net work


def test_fit_recovers_the_cost_model_and_never_goes_negative():
    from controlnet.web.cost import fit

    pixels = [256, 1024, 2304]
    got = fit(pixels, [0.01 + 2e-5 * p + 3e-9 * p * p for p in pixels])
    assert got.c == pytest.approx(0.01) and got.a == pytest.approx(2e-5) and got.b == pytest.approx(3e-9)
    noisy = fit(pixels, [0.05, 0.04, 0.2])  # a dip that a free quadratic would follow below zero
    assert min(noisy.c, noisy.a, noisy.b) >= 0 and noisy.seconds(2304) > 0
    # beyond the largest timed size the cost grows with the square of the pixels, whatever the fit
    for cost in (got, noisy):
        assert cost.seconds(4 * 2304) == pytest.approx(16 * cost.seconds(2304))


@pytest.mark.parametrize("base", ["mini", "sd1", "sdxl", "sd1-inpainting"])
def test_step_cost_is_measured_for_every_kind_of_base(base):
    from controlnet.pipeline import ControlPipeline
    from controlnet.web.cost import measure

    if base == "mini":
        pipe = engine().pipe
    else:
        from tiny_models import tiny_pipeline

        nine = {"in_channels": 9} if base.endswith("inpainting") else None
        pipe = ControlPipeline.from_diffusers(tiny_pipeline(base.split("-")[0], unet_config=nine))
    cost = measure(pipe)
    assert cost.seconds(64) > 0 and cost.seconds(4096) >= cost.seconds(64)


@pytest.mark.parametrize("route", ["/sdapi/v1/txt2img", "/jobs/txt2img"])
def test_costly_request_is_refused_naming_fields_and_limit(route):
    from controlnet.web.service import BadRequest

    with running_server(_limits(max_job_seconds=0.6)) as (url, app):
        r = requests.post(url + route, json=body(width=2048, height=2048, steps=150, batch_size=8), timeout=30)
        assert r.status_code == 422, r.text
        field, detail = r.json()["field"], r.json()["detail"]
        assert {"width", "height", "steps", "batch_size"} <= set(field.split(","))
        assert "--max-job-seconds" in detail and "0.6 s" in detail
        assert requests.post(url + route, json=body(seed=3), timeout=60).status_code in (200, 202)
        assert len(app.state.service.queue.jobs()) == 1  # the refused one was never queued
        # each ControlNet unit adds a network forward per step: admitted alone, refused with a unit
        service, middle = app.state.service, dict(width=512, height=512, steps=50, cfg_scale=5)
        assert service.parse("txt2img", body(**middle)).width == 512
        with pytest.raises(BadRequest) as refused:
            service.parse("txt2img", body(**middle, units=[unit(image=_square(512))]))
        assert refused.value.status == 422 and "alwayson_scripts.controlnet.args" in refused.value.field


def _square(size):
    from serve_tools import square

    return square(size, (size // 4, 3 * size // 4))


def test_huge_prompt_is_refused_at_once_and_long_prompts_by_tokens():
    with running_server(_limits(max_prompt_tokens=20)) as (url, app):
        huge = "a red circle on a blue background, " * 12000  # 420 KB
        for route in ("/jobs/txt2img", "/sdapi/v1/txt2img"):
            t0 = time.perf_counter()
            r = requests.post(url + route, json=body(prompt=huge), timeout=30)
            assert r.status_code == 422 and r.json()["field"] == "prompt", r.text
            assert "--max-prompt-tokens" in r.json()["detail"] and time.perf_counter() - t0 < 5
        words = "red " * 30  # 120 characters, 30 tokens: counted, not guessed from the length
        r = requests.post(url + "/jobs/txt2img", json=body(negative_prompt=words), timeout=30)
        assert r.status_code == 422 and r.json()["field"] == "negative_prompt" and "30 tokens" in r.json()["detail"]
        assert requests.post(url + "/sdapi/v1/txt2img", json=body(prompt="red " * 20), timeout=60).status_code == 200
        assert not [j for j in app.state.service.queue.jobs() if j.state != "done"]


# ---------------------------------------------------------------------------------------- interrupt


def _hooks(module_starts, module_ends, on_start, reached=False):
    """Count completions of `module_ends` (`reached`: its starts, seen before the stop checks' own
    hooks); call on_start() when `module_starts` begins."""
    ends = []
    count = module_ends.register_forward_pre_hook if reached else module_ends.register_forward_hook
    handles = [module_starts.register_forward_pre_hook(lambda *_: on_start()), count(lambda *_: ends.append(1))]
    return ends, handles


def _stop_once(flag):
    from controlnet.web.engine import Interrupted

    calls = []

    def on_step(done, total):
        calls.append((done, total))
        if flag:
            raise Interrupted()
    return on_step, calls


@pytest.mark.parametrize("where", ["unet", "text", "attention"])
def test_interrupt_lands_inside_a_step_and_inside_prompt_encoding(where):
    """The stop is seen before the next network block (or slice of a big attention): a U-Net
    forward, the prompt's encoding or a 4096-token self-attention that has begun does not finish."""
    from controlnet.web.stopping import blocks

    pipe, flag = engine().pipe, []
    attention = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    first, last = {"unet": (pipe.unet.down_blocks[0], pipe.unet.up_blocks[-1]),
                   "text": (list(blocks(pipe.text_encoder))[0], list(blocks(pipe.text_encoder))[-1]),
                   "attention": (attention, attention.to_out[0])}[where]  # to_out: after the attention proper
    ends, handles = _hooks(first, last, lambda: flag.append(1), reached=where == "attention")
    on_step, calls = _stop_once(flag)
    side = 512 if where == "attention" else 64
    try:
        out = engine().generate(_generation(steps=5, width=side, height=side), on_step)
    finally:
        for h in handles:
            h.remove()
    assert out.interrupted and ends == [] and out.images == []
    assert calls[0] == (0, 5)  # the total is known before the first step


def _stop_after_two(exc):
    def on_step(done, total):
        if done >= 2:
            raise exc()
    return on_step


def test_sliced_attention_gives_the_same_pictures():
    """Slicing a big attention to check for a stop changes no pixel (each query row is computed as before)."""
    import numpy as np

    from controlnet.web.stopping import stoppable

    pipe = engine().pipe

    def picture():
        return pipe("a red square", [], steps=1, width=512, height=512, seed=3, progress=False, output_type="np").images

    plain = picture()
    with stoppable([pipe.unet, pipe.vae], lambda: None):
        assert np.array_equal(picture(), plain)


def test_job_stopped_before_its_first_step_answers_without_pictures():
    from controlnet.web.engine import Interrupted

    def stopped(done, total):
        raise Interrupted()

    out = engine().generate(_generation(steps=5), stopped)
    assert out.interrupted and out.images == [] and out.params == []


def test_partial_pictures_are_decoded_only_when_quick_and_wanted(monkeypatch):
    from controlnet.web import engine as engine_module
    from controlnet.web.engine import Cancelled, Interrupted

    stop_after_two = _stop_after_two(Interrupted)
    out = engine().generate(_generation(steps=5, batch_size=2), stop_after_two)
    assert out.interrupted and len(out.images) == 2 and not out.warnings
    assert out.partial_step == 2 and all(p["interrupted"] == {"step": 2} for p in out.params)  # marked in the PNGs
    out = engine().generate(_generation(steps=5, batch_size=2), _stop_after_two(Cancelled))  # nobody to see them
    assert out.interrupted and out.images == [] and not out.warnings
    monkeypatch.setattr(engine_module, "PARTIAL_DECODE_SECONDS", -1.0)
    out = engine().generate(_generation(steps=5, batch_size=2), stop_after_two)
    assert out.interrupted and out.images == [] and "not decoded" in out.warnings[-1]
    assert out.partial_step == 0 and out.partial_seeds == []


# ---------------------------------------------------------------------------------------- states


LONG = dict(width=256, height=256, steps=150)  # a few seconds at least on any machine's CPU


def test_queued_job_interrupted_is_cancelled_at_once_and_totals_are_known():
    with running_server(_limits(max_job_seconds=1e6)) as (url, app):
        a = requests.post(url + "/jobs/txt2img", json=body(seed=1, **LONG)).json()["job_id"]
        b = requests.post(url + "/jobs/txt2img", json=body(seed=2, steps=3, n_iter=2)).json()
        c = requests.post(url + "/jobs/txt2img", json=body(seed=3, steps=2)).json()
        assert b["state"] == "queued" and b["total"] == 6 and b["step"] == 0  # never "step 0 of 0"
        assert (b["queue_position"], c["queue_position"]) == (1, 2)
        stopped = requests.post(f"{url}/jobs/{b['job_id']}/interrupt").json()
        assert stopped["state"] == "cancelled" and stopped["queue_position"] == 0
        assert requests.get(f"{url}/jobs/{b['job_id']}").json()["state"] == "cancelled"
        assert requests.get(f"{url}/jobs/{c['job_id']}").json()["queue_position"] == 1
        _wait(lambda: requests.get(f"{url}/jobs/{a}").json()["step"] >= 2)
        assert requests.post(f"{url}/jobs/{a}/interrupt").status_code == 200
        _wait(lambda: requests.get(f"{url}/jobs/{a}").json()["state"] != "running")
        first = requests.get(f"{url}/jobs/{a}").json()
        assert first["state"] == "interrupted" and first["total"] == 150
        assert first["progress"] == pytest.approx(first["step"] / 150) and first["progress"] < 1
        _wait(lambda: requests.get(f"{url}/jobs/{c['job_id']}").json()["state"] == "done")


def test_another_users_queued_job_cannot_be_seen_or_cancelled():
    """Owners hold in the queue too: Bob cannot see or cancel Alice's waiting job; she can."""
    alice, bob = ("alice", "a-pass"), ("bob", "b-pass")
    with running_server(_limits(max_job_seconds=1e6), auth=dict([alice, bob])) as (url, app):
        running = requests.post(url + "/jobs/txt2img", json=body(seed=1, **LONG), auth=alice).json()["job_id"]
        waiting = requests.post(url + "/jobs/txt2img", json=body(seed=2, steps=2), auth=alice).json()["job_id"]
        assert requests.get(f"{url}/jobs/{waiting}", auth=bob).status_code == 404
        assert requests.post(f"{url}/jobs/{waiting}/interrupt", auth=bob).status_code == 404
        mine = requests.get(f"{url}/jobs/{waiting}", auth=alice).json()
        assert mine["state"] == "queued" and mine["queue_position"] == 1
        assert requests.post(f"{url}/jobs/{waiting}/interrupt", auth=alice).json()["state"] == "cancelled"
        assert requests.post(f"{url}/jobs/{running}/interrupt", auth=alice).status_code == 200


def test_job_running_past_the_limit_is_stopped():
    """When the estimate was low, the job is still stopped at --max-job-seconds, with the pictures reached."""
    from controlnet.web.cost import StepCost

    with running_server(_limits(max_job_seconds=0.5, step_cost=StepCost())) as (url, app):
        r = requests.post(url + "/sdapi/v1/txt2img", json=body(**LONG), timeout=120)
        job = app.state.service.queue.get(r.headers["X-Job-Id"])
    info = json.loads(r.json()["info"])
    assert r.status_code == 200 and info["interrupted"] and "--max-job-seconds" in info["warnings"][-1]
    assert job.state == "interrupted" and job.step < job.total == 150


def test_abandoned_job_is_cancelled():
    with running_server(_limits(max_job_seconds=1e6, abandon_after=1.0)) as (url, app):
        job = requests.post(url + "/jobs/txt2img", json=body(**LONG)).json()["job_id"]
        _wait(lambda: requests.get(f"{url}/jobs/{job}").json()["step"] >= 1)
        stored = app.state.service.queue.get(job)
        _wait(lambda: stored.done.is_set())  # nobody polls now (`stored` is not a poll)
        status = requests.get(f"{url}/jobs/{job}").json()
        assert status["state"] == "cancelled" and "not polled" in status["cancelled"]
        assert status["result"] is None and status["progress"] < 1


# ---------------------------------------------------------------------------------------- shutdown


@contextlib.contextmanager
def _serve_process(*args):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "controlnet", "serve", "--port", str(port), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the server did not start"
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(url + "/controlnet/version", timeout=5).ok:
                    break
            time.sleep(0.2)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_server_with_a_job_running(sig):
    with _serve_process("--max-job-seconds", "100000") as (proc, url):
        answers = []
        client = threading.Thread(target=_post_into, args=(answers, url + "/sdapi/v1/txt2img",
                                                           body(width=512, height=512, steps=150)))
        client.start()
        _wait(lambda: requests.get(url + "/sdapi/v1/progress").json()["state"]["job"] != "")
        queued = requests.post(url + "/jobs/txt2img", json=body(steps=2)).json()
        assert queued["state"] == "queued"
        time.sleep(1.0)  # inside the first steps
        t0 = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=15)
        took = time.monotonic() - t0
        client.join(15)
    assert took < 15 and not client.is_alive()
    assert answers and answers[0] in (503, None)  # "the server is shutting down", or the connection dropped
    print(f"\n{signal.Signals(sig).name}: the server exited {took:.2f} s after the signal with a 512×512 job running")


def _post_into(answers: list, url: str, payload: dict) -> None:
    """POST in a thread: the status code, or None when the connection was dropped."""
    try:
        answers.append(requests.post(url, json=payload, timeout=120).status_code)
    except requests.ConnectionError:
        answers.append(None)
