"""`controlnet demo`: the built-in miniature model on CPU — condition | without control | with control |
with the condition's outline drawn over it.

Conditions come from held-out samples of the generated world (the models never saw them), so the
demo needs no files beyond the package; the grid shows at a glance whether the ControlNets work. The
grid is made by `controlnet.mini.demo`; this parses and calls.
"""

from __future__ import annotations

import time

from controlnet import checks


def run(args) -> int:
    import torch

    from controlnet.assets import resolve_model
    from controlnet.cli import quiet_libraries
    from controlnet.mini.demo import make_demo

    quiet_libraries()
    # A model this small gains nothing from intra-op threads, and they thrash when the CPU is busy; the
    # cores go to processes instead (--jobs), each sampling one ControlNet's rows.
    threads = checks.positive_int("--threads", args.threads)
    jobs = default_jobs() if args.jobs is None else checks.positive_int("--jobs", args.jobs)
    torch.set_num_threads(1 if jobs > 1 else threads)  # no OpenMP pool before forking: workers set theirs
    start = time.perf_counter()
    model = resolve_model(args.model)
    path, conditions = make_demo(model, args.output, samples=args.samples, steps=args.steps, weight=args.weight,
                                 guidance_scale=args.guidance_scale, seed=args.seed, progress=not args.quiet,
                                 jobs=jobs, threads=threads)
    print(f"rows: {', '.join(conditions)} ({args.samples} held-out world samples each); columns: condition | "
          f"without control | with control | with the condition's outline; {time.perf_counter() - start:.1f} s")
    print(path)
    return 0


def default_jobs() -> int:
    """The CPU cores this process may use (the demo has four ControlNets' rows to share among them)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the built-in miniature model with and without its ControlNets, write a grid")
    p.add_argument("-o", "--output", default="controlnet-demo.png", help="grid image to write")
    p.add_argument("--model", "--base", dest="model", default="mini",
                   help="'mini' or 'mini-dit' (built in), or a folder laid out the same way")
    p.add_argument("--samples", type=int, default=3, help="samples per ControlNet")
    p.add_argument("--steps", type=int, help="sampling steps (default: each ControlNet's recommended, else 20)")
    p.add_argument("--cfg", dest="guidance_scale", type=float, help="classifier-free guidance scale (<= 1 turns it "
                   "off; default: each ControlNet's recommended, else 5)")
    p.add_argument("--weight", type=float, help="control weight (default: each ControlNet's recommended, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads per process (1 is fastest for the mini model)")
    p.add_argument("--jobs", type=int, help="processes sampling the ControlNets' rows at once (Linux; default: one per "
                   "CPU core; the pictures are the same whatever the number)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
