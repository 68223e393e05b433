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

from serve_tools import body, decode, engine, running_server

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


if __name__ == "__main__":
    pytest.main([__file__, "-q", "-s"])
