"""`controlnet serve` under sustained load on loopback: rounds of concurrent clients, each request
with one ControlNet unit; a refused request (503) waits its Retry-After and tries again. Prints
latency p50/p95, throughput, how many 503s were answered, and the server's resident memory after
each round (bounded: it must level off, not grow with the number of requests).

    OMP_NUM_THREADS=2 python benchmarks/serve_load.py --clients 16 --requests 4 --rounds 5
"""

from __future__ import annotations

import argparse
import base64
import io
import socket
import threading
import time

import numpy as np
import requests
import uvicorn
from PIL import Image

from controlnet.web import Limits, create_app
from controlnet.web.engine import Engine


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def condition_b64() -> str:
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (255, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def request_body(seed: int, image: str) -> dict:
    unit = {"enabled": True, "image": image, "module": "canny", "model": "mini-edges", "pixel_perfect": True}
    return {"prompt": "a red square on a blue background", "seed": seed, "steps": 10, "width": 64, "height": 64,
            "cfg_scale": 5, "sampler_name": "DDIM", "alwayson_scripts": {"controlnet": {"args": [unit]}}}


def client(url: str, seeds: list[int], image: str, out: list) -> None:
    for seed in seeds:
        start, refused = time.perf_counter(), 0
        while True:
            r = requests.post(f"{url}/sdapi/v1/txt2img", json=request_body(seed, image), timeout=300)
            if r.status_code != 503:
                break
            refused += 1
            time.sleep(float(r.headers.get("Retry-After", 1)))
        assert r.status_code == 200, r.text
        out.append((time.perf_counter() - start, refused))


def serve(app) -> tuple[str, uvicorn.Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="per client and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queue", type=int, default=4)
    args = parser.parse_args()
    url, server = serve(create_app(Engine("mini"), Limits(queue_size=args.queue)))
    image, seed = condition_b64(), 0
    print(f"server up; resident memory {rss_mb():.0f} MB")
    for round_ in range(args.rounds):
        results: list = []
        threads = []
        for _ in range(args.clients):
            seeds = list(range(seed, seed + args.requests))
            seed += args.requests
            threads.append(threading.Thread(target=client, args=(url, seeds, image, results)))
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        latency = np.array([r[0] for r in results])
        print(f"round {round_ + 1}: {len(results)} requests in {wall:.1f} s ({len(results) / wall:.2f} images/s), "
              f"latency p50 {np.percentile(latency, 50):.2f} s p95 {np.percentile(latency, 95):.2f} s, "
              f"{sum(r[1] for r in results)} 503s retried; resident memory {rss_mb():.0f} MB")
    server.should_exit = True


if __name__ == "__main__":
    main()
