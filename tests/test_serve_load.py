"""`controlnet serve` under load on loopback: 16 concurrent clients × 2 requests with a small queue.
Every request completes with its own correct result (the exact pixels its seed and prompt give)
or is refused with 503 + Retry-After; nothing is lost or crossed; the job store stays bounded."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import requests

from serve_tools import body, decode, engine, running_server, square, unit

CLIENTS, REQUESTS = 16, 2


def _client(url: str, index: int, out: list) -> None:
    for j in range(REQUESTS):
        seed = 1000 + index * REQUESTS + j
        payload = body(seed=seed, steps=2, prompt=f"a red square number {index}")
        t0 = time.perf_counter()
        r = requests.post(f"{url}/sdapi/v1/txt2img", json=payload, timeout=120)
        out.append((index, seed, payload["prompt"], r.status_code, r.json(), r.headers, time.perf_counter() - t0))


def test_concurrent_clients_get_their_own_results_or_503():
    from controlnet.web import Limits

    limits = Limits(queue_size=3, keep_jobs=8)
    results: list = []
    with running_server(limits) as (url, app):
        threads = [threading.Thread(target=_client, args=(url, i, results)) for i in range(CLIENTS)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        wall = time.perf_counter() - t0
        stored = app.state.service.queue.jobs()
    assert len(results) == CLIENTS * REQUESTS
    assert {status for *_, status, _, _, _ in results} <= {200, 503}
    done = [r for r in results if r[3] == 200]
    refused = [r for r in results if r[3] == 503]
    assert done, "no request completed"
    assert all(int(h["Retry-After"]) >= 1 and "queue is full" in b["detail"] for *_, b, h, _ in refused)
    # memory stays bounded: at most keep_jobs finished jobs are kept, without their inputs
    assert len(stored) <= limits.keep_jobs and all(j.request is None for j in stored)
    ids = [h["X-Job-Id"] for *_, h, _ in done]
    assert len(set(ids)) == len(ids)
    e = engine()
    for _, seed, prompt, _, answer, _, _ in done:
        info = json.loads(answer["info"])
        assert info["all_seeds"] == [seed] and info["prompt"] == prompt
        want = e.pipe(prompt, [], steps=2, guidance_scale=5.0, scheduler="ddim", seed=seed, width=64, height=64,
                      progress=False).images[0]
        assert np.array_equal(decode(answer["images"][0]), np.array(want)), f"seed {seed}: not its own picture"
    latencies = sorted(r[-1] for r in done)
    p50, p95 = np.percentile(latencies, 50), np.percentile(latencies, 95)
    print(f"\nload: {CLIENTS} clients × {REQUESTS} requests, queue {limits.queue_size}: {len(done)} done, "
          f"{len(refused)} refused (503); latency of completed p50 {p50:.3f} s, p95 {p95:.3f} s; "
          f"throughput {len(done) / wall:.1f} images/s over {wall:.2f} s")


def _timed_post(url: str, payload: dict, out: dict, key: str) -> None:
    r = requests.post(url, json=payload, timeout=300)
    out[key] = (time.monotonic(), r.status_code, r.json())


def test_small_request_is_answered_soon_after_interrupting_a_maximal_one():
    """The largest request these limits admit (side, steps, batch, a unit) runs; a small one waits
    behind it; an interrupt frees the worker within a few seconds, not at the end of a step."""
    from controlnet.web import Limits

    limits = Limits(max_side=768, max_batch=2, max_steps=150, units=1, max_job_seconds=1e9)
    big = body(seed=1, steps=150, width=768, height=768, batch_size=2,
               units=[unit(image=square(768, (192, 576)), pixel_perfect=True)])
    answers: dict = {}
    with running_server(limits) as (url, app):
        queue = app.state.service.queue
        threads = [threading.Thread(target=_timed_post, args=(f"{url}/sdapi/v1/txt2img", big, answers, "big"))]
        threads[0].start()
        deadline = time.monotonic() + 60
        while queue.current is None:
            assert time.monotonic() < deadline, "the big request did not start"
            time.sleep(0.02)
        threads.append(threading.Thread(target=_timed_post, args=(f"{url}/sdapi/v1/txt2img", body(seed=2), answers, "small")))
        threads[1].start()
        while queue.waiting == 0:
            time.sleep(0.02)
        time.sleep(2.0)  # well inside the big request's first step
        step = queue.current.step
        interrupted = time.monotonic()
        assert requests.post(f"{url}/sdapi/v1/interrupt").json()["interrupted"]
        for t in threads:
            t.join(300)
    big_after, small_after = answers["big"][0] - interrupted, answers["small"][0] - interrupted
    assert answers["big"][1] == answers["small"][1] == 200
    assert json.loads(answers["big"][2]["info"])["interrupted"] and len(answers["small"][2]["images"]) == 1
    assert small_after < 10.0, f"the small request was answered {small_after:.1f} s after the interrupt"
    print(f"\ninterrupt of 768×768 × 150 steps × 2 images + 1 unit at step {step}: it answered after {big_after:.2f} s, "
          f"the small request queued behind it after {small_after:.2f} s")


if __name__ == "__main__":
    pytest.main([__file__, "-q", "-s"])
