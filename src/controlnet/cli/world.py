"""`controlnet world`: the generated world of coloured shapes, and the miniature SD trained on it.

    controlnet world show grid.png --n 8               # pictures with every condition map
    controlnet world export data/edges --n 1000 --layout fill50k --condition edges
    controlnet world build-mini outputs/mini --budget-minutes 120
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from controlnet.errors import InputError

# the world API's parameter names that are options of these commands
OPTIONS = ("n", "start", "seed", "size", "min_shapes", "max_shapes", "scale", "threads", "budget_minutes")


def name_the_flag(run):
    """The API's messages name its parameters ("n must be ..."); on the command line, name the flag too."""
    @functools.wraps(run)
    def wrapper(args):
        try:
            return run(args)
        except InputError as exc:
            name = str(exc).split(" ", 1)[0].rstrip(":")
            if name not in OPTIONS:
                raise
            raise InputError(f"--{name.replace('_', '-')}: {exc}") from None
    return wrapper


def register(subparsers) -> None:
    from controlnet.world.export import LAYOUTS
    from controlnet.world.render import CONDITIONS

    parser = subparsers.add_parser("world", help="generated shapes world: export datasets, build the mini model",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    show = actions.add_parser("show", help="save a grid of samples with all their condition maps")
    show.add_argument("out", help="PNG file to write")
    show.add_argument("--n", type=int, default=8, help="samples (rows)")
    _world_options(show)
    show.add_argument("--scale", type=int, default=3, help="upscale the grid this many times for viewing")
    show.set_defaults(func=run_show)

    export = actions.add_parser("export", help="write samples in the fill50k or image-folder layout")
    export.add_argument("out", help="new or empty folder; rerun the same command to resume an interrupted export")
    export.add_argument("--n", type=int, default=1000, help="number of samples")
    export.add_argument("--layout", choices=LAYOUTS, default="fill50k",
                        help="fill50k: prompt.json + source/ + target/; imagefolder: metadata.jsonl (diffusers)")
    export.add_argument("--condition", choices=CONDITIONS, default="edges", help="condition map kind")
    export.add_argument("--start", type=int, default=0, help="index of the first sample")
    _world_options(export)
    export.set_defaults(func=run_export)

    build = actions.add_parser("build-mini", help="train the miniature SD from scratch (every stage, resumable)")
    build.add_argument("out", help="build folder; rerun the same command to resume")
    build.add_argument("--budget-minutes", type=float, default=None,
                       help="time for the whole recipe, ControlNet stages included (default 175)")
    build.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    build.add_argument("--tiny", action="store_true", help="toy sizes and 3 steps per stage (a smoke test)")
    build.add_argument("--seed", type=int, default=None, help="world seed for the training samples (default 0)")
    build.set_defaults(func=run_build, dit=False)

    dit = actions.add_parser("build-mini-dit", help="train the miniature Flux-shaped base and its edges ControlNet "
                             "(shares mini's autoencoder and text encoder; resumable)")
    dit.add_argument("out", help="build folder; rerun the same command to resume")
    dit.add_argument("--budget-minutes", type=float, default=None,
                     help="time for the whole recipe: base 60%%, edges ControlNet 35%% (default 90)")
    dit.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    dit.add_argument("--tiny", action="store_true", help="toy sizes and 3 steps per stage (a smoke test)")
    dit.add_argument("--seed", type=int, default=None, help="world seed for the training samples (default 0)")
    dit.set_defaults(func=run_build, dit=True)


def _world_options(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="world seed: same seed, same samples")
    parser.add_argument("--size", type=int, default=64, help="picture size in pixels")
    parser.add_argument("--min-shapes", type=int, default=1)
    parser.add_argument("--max-shapes", type=int, default=3)


@name_the_flag
def run_show(args) -> int:
    from controlnet.world import save_world_grid

    path, captions, conditions = save_world_grid(args.out, args.n, args.seed, args.size, args.min_shapes,
                                                 args.max_shapes, args.scale)
    print("columns: picture | " + " | ".join(conditions))
    for i, text in enumerate(captions):
        print(f"{i}: {text}")
    print(path)
    return 0


@name_the_flag
def run_export(args) -> int:
    from controlnet.world.export import export

    t0 = time.perf_counter()
    out = export(args.out, args.n, args.layout, args.condition, args.seed, args.size, args.start,
                 args.min_shapes, args.max_shapes)
    print(f"{args.n} samples ({args.layout}, {args.condition}) in {time.perf_counter() - t0:.1f} s: {out}")
    return 0


@name_the_flag
def run_build(args) -> int:
    from dataclasses import replace

    if args.dit:
        from controlnet.mini.dit_build import build_mini_dit as build_mini
        from controlnet.mini.dit_config import MiniDiTConfig as MiniConfig
    else:
        from controlnet.mini.build import build_mini
        from controlnet.mini.config import MiniConfig

    config = None
    if args.tiny or args.budget_minutes is not None or args.seed is not None:
        config = MiniConfig.tiny() if args.tiny else MiniConfig()
        if args.budget_minutes is not None:
            config = replace(config, budget_minutes=args.budget_minutes)
        if args.seed is not None:
            config = replace(config, world_seed=args.seed)
    # no options: resume with the folder's stored recipe (or the default one for a new folder)
    report = build_mini(args.out, config, threads=args.threads)
    # "seconds": a stage's own training time, kept across resumes (wall_s restarts with each run)
    print("stage timings: " + ", ".join(f"{k} {v.get('seconds', v['wall_s']):.0f} s" for k, v in report["stages"].items()))
    print(Path(args.out) / "model")
    return 0
