"""`controlnet serve`: the web page and an AUTOMATIC1111-compatible HTTP API on one port.

Listens on 127.0.0.1 unless --listen; --api-auth user:pass protects page and API (HTTP basic).
Other web pages may not call it unless --cors-allow-origins names them.
The base model loads once at start; ControlNets load on first use and stay loaded.
"""

from __future__ import annotations

import gc
import os
import sys


def register(sub) -> None:
    p = sub.add_parser("serve", help="web page + A1111-compatible HTTP API (built-in mini model by default)",
                       description="Serve a web page and the AUTOMATIC1111 / sd-webui-controlnet HTTP API. "
                       "Open http://127.0.0.1:7860/ in a browser; clients such as webuiapi use the same port.")
    p.add_argument("--model", default="mini", help="base model: a diffusers folder, a single-file checkpoint, or mini (default)")
    p.add_argument("--annotator-dir", "--models-dir", dest="annotator_dir", metavar="DIR",
                   help="weights of the learned preprocessors to offer (default $CONTROLNET_ANNOTATOR_DIR): the published "
                   "files flat (DIR/ControlNetHED.pth, DIR/sk_model.pth, ...) or in sd-webui-controlnet's annotator/downloads "
                   "layout (DIR/hed/ControlNetHED.pth), and transformers folders DIR/depth, DIR/seg_ade20k")
    p.add_argument("--controlnet-dir", help="a folder of ControlNet checkpoints (files or diffusers folders) to offer")
    p.add_argument("--control-lora", metavar="FILE", help="a FLUX.1 Control LoRA (Canny/Depth dev -lora) applied to the "
                   "plain Flux base of --model; each request then sends its hint as control_image")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; on a "
                   "loopback address it answers only to localhost, loopback addresses and this name: no DNS rebinding)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860, as A1111)")
    p.add_argument("--listen", action="store_true", help="listen on all interfaces (0.0.0.0); use with --api-auth")
    p.add_argument("--api-auth", metavar="USER:PASS", help="HTTP basic auth for page and API (comma-separated for several "
                   "users; each user sees only their own jobs)")
    p.add_argument("--cors-allow-origins", "--cors-allow-origin", metavar="ORIGINS",
                   help="other web pages that may call the API, e.g. http://localhost:3000 (comma-separated; * for any); "
                   "requests from any other page are refused (403), the server's own page always works")
    p.add_argument("--cors-allow-origins-regex", "--cors-allow-origin-regex", metavar="REGEX",
                   help="allow the origins this regular expression matches in full, as --cors-allow-origins")
    p.add_argument("--queue-size", type=int, default=8, help="requests that may wait; more get 503 + Retry-After (default 8)")
    p.add_argument("--units", type=int, default=3, help="ControlNet units per request (default 3)")
    p.add_argument("--max-side", type=int, default=2048, help="largest output width/height (default 2048)")
    p.add_argument("--max-batch", type=int, default=8, help="most images per request, batch_size × n_iter (default 8)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body in MB (default 64)")
    p.add_argument("--max-input-pixels", type=int, default=4096 * 4096, help="largest uploaded image in pixels (default 4096²)")
    p.add_argument("--max-job-seconds", type=float, default=600.0,
                   help="refuse requests estimated to run longer (by a step timed at startup) and stop jobs that do "
                   "(default 600)")
    p.add_argument("--max-prompt-tokens", type=int, default=1000, help="longest prompt / negative prompt in tokens (default 1000)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--dtype", default="fp32", help="fp32, fp16 or bf16 (default fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the U-Net and ControlNets (CUDA: CUDA graphs); "
                   "each new size and batch pays a warm-up on its first request")
    p.set_defaults(func=run)


def limits(args):
    from controlnet import checks
    from controlnet.web import Limits

    return Limits(queue_size=checks.integer("--queue-size", args.queue_size, lo=1, hi=10_000),
                  units=checks.integer("--units", args.units, lo=1, hi=10),
                  max_side=checks.integer("--max-side", args.max_side, lo=64, hi=16384),
                  max_batch=checks.integer("--max-batch", args.max_batch, lo=1, hi=1000),
                  max_body_mb=checks.number("--max-body-mb", args.max_body_mb, lo=0.0, lo_open=True),
                  max_input_pixels=checks.integer("--max-input-pixels", args.max_input_pixels, lo=64 * 64),
                  max_job_seconds=checks.number("--max-job-seconds", args.max_job_seconds, lo=0.0, lo_open=True),
                  max_prompt_tokens=checks.integer("--max-prompt-tokens", args.max_prompt_tokens, lo=1, hi=100_000))


def run(args) -> int:
    from controlnet import checks
    from controlnet.web import create_app
    from controlnet.web.dit_engine import open_engine
    from controlnet.web.guard import Origins, parse_auth
    from controlnet.web.server import make_server

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    host = "0.0.0.0" if args.listen else args.host
    port = checks.integer("--port", args.port, lo=0, hi=65535)
    auth, lim = parse_auth(args.api_auth), limits(args)
    origins = Origins.from_flags(args.cors_allow_origins, args.cors_allow_origins_regex, host=args.host)
    if host not in ("127.0.0.1", "localhost", "::1") and not auth:
        print(f"controlnet serve: warning: listening on {host} without --api-auth: anyone who can reach this machine "
              "can use the server", file=sys.stderr)
    from controlnet.cli import quiet_libraries

    quiet_libraries()
    engine = open_engine(args.model, args.controlnet_dir, device=args.device, dtype=args.dtype, annotator_dir=args.annotator_dir,
                         compile=args.compile, control_lora=args.control_lora)
    print(f"controlnet serve: {engine.model_name} with {len(engine.controlnets)} ControlNet(s) on http://{host}:{port}/",
          file=sys.stderr)
    try:
        make_server(create_app(engine, lim, auth, origins), host, port).run()
    finally:
        gc.freeze()  # no collection of the models at exit (it took ~5 s after Ctrl-C): the process ends at once
    return 0
