"""`controlnet world build-mini-dit`: the mini-dit recipe, every stage in order, resumable.

OUT/recipe.json      the settings (a resumed build reuses them)
OUT/base/            stage 1: latents.pt, texts.pt (caches), state.pt, done.json, samples/step_*.png
OUT/model/           the base: transformer/ (fp16), scheduler/, model_index.json sharing the miniature
                     SD's autoencoder, text encoder and tokenizer
OUT/controlnets/edges/  stage 2: the XLabs-style edges ControlNet -> OUT/model/controlnet-edges
OUT/report.json      stage timings, losses, sizes
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from controlnet import checks
from controlnet.files import write_json
from controlnet.mini import dit_pipeline
from controlnet.mini.config import start_build
from controlnet.mini.dit_base_stage import base_stage, caches, held_out_rows, to_uint8
from controlnet.mini.dit_config import MiniDiTConfig
from controlnet.mini.dit_controlnet_stage import CONDITION, controlnet_stage, edge_maps, held_out
from controlnet.mini.dit_models import build_scheduler, build_transformer, controlnet_from_transformer
from controlnet.mini.loop import load_final, run_stage
from controlnet.world import save_grid

SAMPLE_SETTINGS = {"steps": 20, "true_cfg_scale": 4.0}


def build_mini_dit(out: str | Path, config: MiniDiTConfig | None = None, threads: int | None = None,
                   progress: bool = True, log=print, mini: Path | None = None) -> dict:
    """Run (or resume) stage 1 (the base transformer), save OUT/model, then stage 2 (the edges
    ControlNet) into OUT/model/controlnet-edges. `mini`: the miniature SD whose autoencoder and text
    encoder are shared (default: the built-in one). Every input is checked first."""
    from controlnet.assets import mini_model_dir

    out = checks.path("build folder", out)
    config = start_build(out, config, MiniDiTConfig, threads)
    mini = mini_model_dir(mini)
    report: dict = {"budget_minutes": config.budget_minutes, "threads": torch.get_num_threads(), "stages": {}}
    transformer, scheduler, parts = train_base(out, config, mini, report, progress, log)
    model = save_model(out, transformer, scheduler, mini)
    train_edges(out, config, model, transformer, scheduler, parts, report, progress, log)
    report["model"] = {"path": str(model), "transformer_megabytes": round(megabytes(model / "transformer"), 2),
                       "controlnet_megabytes": round(megabytes(model / f"controlnet-{CONDITION}"), 2)}
    write_json(out / "report.json", report)
    return report


def train_base(out: Path, config: MiniDiTConfig, mini: Path, report: dict, progress: bool = True, log=print):
    """Stage 1 (or its result, when done): the EMA transformer, its scheduler and the shared parts."""
    vae, text_encoder, tokenizer = dit_pipeline.mini_parts(mini)
    transformer, scheduler = build_transformer(config), build_scheduler()
    t0 = time.perf_counter()
    latents, texts = caches(config, vae, text_encoder, tokenizer, out / "base", progress)
    encode_s = time.perf_counter() - t0
    scale = float(vae.config.scaling_factor)

    def show(step: int, modules: dict) -> None:
        rows = held_out_rows(config)
        pipe = dit_pipeline.assemble(modules["transformer"].eval(), vae, text_encoder, tokenizer, build_scheduler())
        images = to_uint8(pipe([s.caption for s in rows for _ in range(4)], negative_prompt="", output_type="np",
                               width=config.image_size, height=config.image_size,
                               generator=torch.Generator().manual_seed(0), **SAMPLE_SETTINGS))
        modules["transformer"].train()
        save_grid([[s.image, *images[4 * k:4 * k + 4]] for k, s in enumerate(rows)],
                  out / "base" / "samples" / f"step_{step:06d}.png", scale=3)

    stage = base_stage(config, transformer, latents, texts, scale, out / "base",
                       max(60.0, config.base.budget_share * config.budget_minutes * 60 - encode_s), show)
    t1 = time.perf_counter()
    done = run_stage(stage, progress)
    load_final(stage)
    report["stages"]["base"] = {**done, "wall_s": round(time.perf_counter() - t1, 1), "encode_s": round(encode_s, 1)}
    log(f"base: {done['steps']} steps, {done['seconds']:.0f} s training; loss {done['loss']}")
    return transformer.eval(), scheduler, (vae, text_encoder, tokenizer)


def save_model(out: Path, transformer, scheduler, mini: Path) -> Path:
    """OUT/model, replaced in one rename (a ControlNet already installed there is kept)."""
    model, tmp = out / "model", out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    dit_pipeline.save(transformer, scheduler, tmp, mini)
    for old in model.glob("controlnet-*") if model.exists() else ():
        shutil.move(str(old), tmp / old.name)
    shutil.rmtree(model, ignore_errors=True)
    tmp.rename(model)
    return model


def megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def train_edges(out: Path, config: MiniDiTConfig, model: Path, transformer, scheduler, parts, report: dict,
                progress: bool = True, log=print) -> Path:
    """Stage 2: the edges ControlNet, copied from the trained base, into OUT/model/controlnet-edges (fp16)."""
    from controlnet.assets import MINI_DIT_DIR
    from controlnet.checkpoints.dit import save_dit_controlnet
    from controlnet.metrics.edges import edge_f1
    from controlnet.metrics.fidelity import reextract
    from controlnet.pipeline.flux import FluxControl
    from controlnet.recommended import FILE

    vae, text_encoder, tokenizer = parts
    folder = out / "controlnets" / CONDITION
    latents, texts = caches(config, vae, text_encoder, tokenizer, out / "base", progress)
    maps = edge_maps(config, len(latents["mean"]), folder / "edges.pt", progress=progress)
    net = controlnet_from_transformer(transformer, config)
    pipe = dit_pipeline.assemble(transformer, vae, text_encoder, tokenizer, build_scheduler())
    samples = held_out(config, 8)

    def show(step: int, modules: dict) -> None:
        cn = modules["controlnet"].eval()
        images = [to_uint8(pipe(s.caption, [FluxControl(cn, hint_image(s))], negative_prompt="", output_type="np",
                                width=config.image_size, height=config.image_size,
                                generator=torch.Generator().manual_seed(0), **SAMPLE_SETTINGS))[0] for s in samples]
        cn.train()
        f1 = sum(edge_f1(reextract("canny", im), s.conditions[CONDITION], tolerance=1) for im, s in zip(images, samples))
        save_grid([[s.conditions[CONDITION], s.image, im] for s, im in zip(samples, images)],
                  folder / "samples" / f"step_{step:06d}.png", scale=3)
        with open(folder / "samples" / "fidelity.txt", "a") as f:
            f.write(f"step {step}: edge F1 (1 px, 8 held-out) {f1 / len(samples):.3f}\n")

    stage = controlnet_stage(config, transformer, net, latents, texts, maps, float(vae.config.scaling_factor), scheduler,
                             folder, config.controlnet.budget_share * config.budget_minutes * 60, show)
    t0 = time.perf_counter()
    done = run_stage(stage, progress)
    load_final(stage)
    report["stages"][f"controlnet-{CONDITION}"] = {**done, "wall_s": round(time.perf_counter() - t0, 1)}
    log(f"controlnet-{CONDITION}: {done['steps']} steps, {done['seconds']:.0f} s training; loss {done['loss']}")
    target = model / f"controlnet-{CONDITION}"
    shutil.rmtree(target, ignore_errors=True)
    save_dit_controlnet(net, target, dtype=torch.float16)
    shipped = MINI_DIT_DIR / target.name / FILE  # the built-in one's recommended settings (the sweep chose them)
    if shipped.is_file():
        shutil.copyfile(shipped, target / FILE)
    return target


def hint_image(sample):
    """A world sample's edges map as the pipelines take a hint: pixels (1, 3, H, W) in [-1, 1]."""
    from controlnet.mini.dit_controlnet_stage import hint_pixels

    return hint_pixels(torch.from_numpy(sample.conditions[CONDITION][None, ..., 0].copy()))
