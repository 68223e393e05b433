"""`evaluate(...)`: sample every row on the same data, prompts and seeds, score, and write reports.

Rows: for each condition kind, the base model without control (its pictures are shared by all
kinds) and each ControlNet of that kind. Image i of every row uses seed `seed + i`, so rows differ
only by their control. See docs/evaluation.md.
"""

from __future__ import annotations

import os
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError
from controlnet.evaluation.rows import UNCONTROLLED, Context
from controlnet.evaluation.settings import EvalSettings, RowSpec, parse_controlnet


def evaluate(model: str | os.PathLike, controlnets, data: str, out: str | os.PathLike, *, config=None,
             settings: EvalSettings | None = None, annotator: str | None = None, annotator_params=None,
             inception=None, clip=None, device: str = "cpu", progress: bool = True, images=None, aesthetic=None,
             models_dir=None, compile: bool = False, **options) -> dict:
    """Evaluate each ControlNet in `controlnets` (plus the uncontrolled base model), and each folder of
    already generated pictures in `images` (NAME=FOLDER), on `data`; write metrics.json, metrics.md,
    metrics.png and samples.png into `out`; return the metrics. `models_dir` (else
    $CONTROLNET_ANNOTATOR_DIR): the detectors' weights for the ControlNet++ protocol figures. `compile`:
    torch.compile the sampling (`controlnet.pipeline.compiled`)."""
    from controlnet.annotators.local_models import models_dir as find_models_dir
    from controlnet.annotators.local_models import on_device
    from controlnet.evaluation import prompts as P
    from controlnet.evaluation.data import open_data
    from controlnet.evaluation.folder_row import parse_images, read_folder_row
    from controlnet.files import outside_inputs, writable_folder

    s = (settings or EvalSettings(**options)).check()
    detectors = find_models_dir(models_dir)
    if annotator and detectors is not None:  # --annotator's weights come from the models folder too
        annotator_params = {"models_dir": str(detectors), **(annotator_params or {})}
    out = writable_folder(out, create=False)  # made by the first write: a refused run leaves nothing
    world_data = str(checks.path("--data", data)).startswith("world")
    if not world_data and not Path(data).exists():
        from controlnet.errors import MissingFileError

        raise MissingFileError(f"--data {data}: no such folder (give a dataset folder, world or world:KIND)")
    data_kind = str(data).split(":", 1)[1] if world_data and ":" in str(data) else (None if world_data else annotator or "condition")
    rows = [parse_controlnet(c, data_kind) for c in (controlnets or [])]
    if not world_data:  # a dataset has one kind of condition: every ControlNet reads it
        rows = [RowSpec(r.label, r.path, data_kind) for r in rows]
    rows += [parse_images(spec) for spec in (images or [])]
    outside_inputs(out, "the output folder (-o)", {**{f"--images {r.label}": r.path for r in rows if r.images},
                                                   "--data": None if world_data else data})
    _check_rows(rows, world_data, s)
    _dit_scheduler(model, s)
    recommended = s.fill_recommended([r.path for r in rows if not r.images])
    s.prompts = P.check_settings(s.prompts, world_data)
    clip_model = _load_clip(clip)
    head = _load_aesthetic(aesthetic, clip_model)
    inception = _inception(s, inception)
    pipe, mid = _load_pipe(model, config, device)
    if compile:
        if not hasattr(pipe, "enable_compile"):
            raise InputError(f"--compile: {model} is a transformer base; compiling is for U-Net bases (run it without --compile)")
        pipe.enable_compile()
    size = getattr(pipe, "picture_size", None) or pipe.vae_scale_factor * pipe.unet.config.sample_size
    kinds = tuple(dict.fromkeys(r.kind for r in rows if not r.images)) or ((data_kind,) if data_kind else ("edges",))
    from controlnet.evaluation.score import score_all

    with on_device(device):  # the dataset's --annotator and the protocol's detectors run where the model does
        source = open_data(str(data), size, kinds, annotator, annotator_params)
        if not source.is_world and len(source) < s.n:
            raise InputError(f"--n {s.n}: the dataset {data} has only {len(source)} samples")
        folders = {r.label: read_folder_row(r, s.n, size) for r in rows if r.images}
        ctx = Context(pipe, source, [source.item(i) for i in range(s.n)], s, out / "cache", mid, progress, folders, head,
                      detectors)
        result = score_all(ctx, rows, kinds, annotator, annotator_params or {}, inception if s.fid else None, clip_model)
    result["settings"] = {**s.sampling(), "n": s.n, "seed": s.seed, "prompts": list(s.prompts), "level": s.level,
                          "fid_resize": s.fid_resize,
                          "model": mid, "data": source.spec, "device": device, "recommended": recommended}
    from controlnet.evaluation.report import write_reports

    write_reports(result, out)
    return result


def _inception(s: EvalSettings, path) -> Path | None:
    """The Inception file for FID/KID. One the user names must exist; without one, a missing wheel
    turns FID/KID off with a note in the outputs instead of failing the whole evaluation."""
    from controlnet.errors import MissingFileError
    from controlnet.evaluation.inception import inception_path

    if not s.fid:
        return None
    try:
        return inception_path(path)
    except MissingFileError as exc:
        if path is not None:
            raise
        s.fid, s.fid_note = False, f"not computed: {exc}"
        return None


def _check_rows(rows: list[RowSpec], world_data: bool, s: EvalSettings) -> None:
    if not rows and not s.uncontrolled:
        raise InputError("nothing to evaluate: give --controlnet or --images, or keep the uncontrolled row")
    for r in rows:
        if world_data and r.kind is None and not r.images:
            raise InputError(f"--controlnet {r.label}: which world condition does it read? write KIND={r.path} "
                             "(e.g. edges=PATH) or use --data world:KIND")
    labels = [r.label for r in rows]
    if UNCONTROLLED in labels:
        raise InputError(f"--images {UNCONTROLLED}=...: that name is the uncontrolled row's; choose another")
    if len(set(labels)) != len(labels):
        raise InputError(f"row name given twice (--controlnet/--images): {sorted(x for x in labels if labels.count(x) > 1)[0]}")


def _load_clip(clip):
    if clip is None:
        return None
    from controlnet.evaluation.clip_score import load_clip

    return load_clip(checks.path("--clip", clip))


def _load_aesthetic(aesthetic, clip_model):
    if aesthetic is None:
        return None
    if clip_model is None:
        raise InputError("--aesthetic needs --clip FOLDER: the CLIP model whose image embeddings the head reads")
    from controlnet.evaluation.aesthetic import check_head, load_head

    head = load_head(aesthetic)
    check_head(head, clip_model)
    return head


def _load_pipe(model, config, device):
    from controlnet.assets import resolve_model
    from controlnet.evaluation.cache import model_id
    from controlnet.pipeline import ControlPipeline

    path = resolve_model(str(checks.path("--model", model)))
    if not path.exists():
        from controlnet.errors import MissingFileError

        raise MissingFileError(f"--model {model}: no such file or folder (a diffusers folder, a single file, or mini)")
    if _dit_kind(path):  # a Flux / SD3 base: sampled as `generate` samples it
        from controlnet.pipeline.dit_batch import load_dit_pipe

        return load_dit_pipe(path, device), model_id(path)
    pipe = ControlPipeline.from_pretrained(path, config=config, device=device)
    pipe.unet.requires_grad_(False)
    return pipe, model_id(path)


def _dit_kind(path) -> str | None:
    from controlnet.generation import dit_kind

    return dit_kind(str(path))


def _dit_scheduler(model, s: EvalSettings) -> None:
    """A transformer base samples with flow matching's Euler only: that is its scheduler, and any other is refused."""
    from controlnet.assets import resolve_model
    from controlnet.pipeline.dit_batch import DIT_SCHEDULER

    if not _dit_kind(resolve_model(str(checks.path("--model", model)))):
        return
    if s.scheduler not in (None, DIT_SCHEDULER):
        raise InputError(f"--scheduler {s.scheduler}: a transformer base (Flux/SD3) samples with flow matching's "
                         f"Euler; leave --scheduler out")
    s.scheduler = DIT_SCHEDULER
