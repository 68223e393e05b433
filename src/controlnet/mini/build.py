"""`controlnet world build-mini`: every stage of the miniature SD, in order, resumable.

OUT/recipe.json   the settings (a resumed build reuses them)
OUT/tokenizer/    the offline CLIPTokenizer
OUT/vae/          stage 1: state.pt (checkpoint), done.json (report), samples/recon_*.png
OUT/base/         stage 2: latents.pt, state.pt, done.json, samples/step_*.png, samples/adherence.txt
OUT/model/        the result, diffusers layout (fp16 safetensors): StableDiffusionPipeline.from_pretrained
OUT/report.json   stage timings, losses, scaling factor, size, measured adherence
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from controlnet import checks
from controlnet.files import write_json
from controlnet.metrics.adherence import adherence
from controlnet.mini import pipeline as mini_pipeline
from controlnet.mini.base_stage import base_stage, encode_latents
from controlnet.mini.config import MiniConfig, start_build
from controlnet.mini.controlnet_stage import train_controlnet
from controlnet.mini.loop import load_final, run_stage
from controlnet.mini.models import build_text_encoder, build_unet, build_vae
from controlnet.mini.tokenizer import build_tokenizer
from controlnet.mini.vae_stage import vae_stage
from controlnet.world import World, save_grid


def build_mini(out: str | Path, config: MiniConfig | None = None, threads: int | None = None,
               progress: bool = True, log=print) -> dict:
    """Run (or resume) stage 1 (autoencoder), stage 2 (text encoder + UNet), save OUT/model, then stage 3:
    one ControlNet per condition into OUT/model/controlnet-<condition>. Every input is checked first."""
    out = checks.path("build folder", out)
    config = start_build(out, config, MiniConfig, threads)
    budget_s = config.budget_minutes * 60
    report: dict = {"budget_minutes": config.budget_minutes, "threads": torch.get_num_threads(), "stages": {}}

    tokenizer = build_tokenizer(out / "tokenizer", config.max_length)
    vae, unet = build_vae(config), build_unet(config)
    text_encoder = build_text_encoder(config, tokenizer)
    _run(report, "vae", vae_stage(config, vae, out / "vae", config.vae.budget_share * budget_s), progress, log)

    t0 = time.perf_counter()
    cache = encode_latents(config, vae, tokenizer, out / "base" / "latents.pt", progress=progress)
    encode_s = time.perf_counter() - t0
    vae.register_to_config(scaling_factor=cache["scaling_factor"])
    log(f"latents: {len(cache['mean'])} samples, scaling_factor {cache['scaling_factor']:.4f}, "
        f"mean {cache['latent_mean']:+.3f} ({encode_s:.0f} s)")
    stage = base_stage(config, unet, text_encoder, tokenizer, vae, cache, out / "base",
                       max(60.0, config.base.budget_share * budget_s - encode_s))
    _run(report, "base", stage, progress, log, encode_latents_s=round(encode_s, 1))

    model = _save_model(config, mini_pipeline.assemble(vae, text_encoder, tokenizer, unet), out, report, log)
    for condition in config.controlnet_conditions:  # stage 3: the ControlNets, by `controlnet train`
        _train_controlnet(config, model, out, condition, budget_s, report, progress, log)
    report["model"]["megabytes"] = round(_megabytes(model), 2)
    write_json(out / "report.json", report)
    return report


def _run(report: dict, name: str, stage, progress: bool, log, **extra) -> None:
    """Train (or resume) one stage, load its final weights, and report it."""
    t0 = time.perf_counter()
    done = run_stage(stage, progress)
    report["stages"][name] = {**done, "wall_s": round(time.perf_counter() - t0, 1), **extra}
    load_final(stage)
    log(_line(report["stages"][name]))


def _save_model(config: MiniConfig, pipe, out: Path, report: dict, log) -> Path:
    """OUT/model (fp16, diffusers layout), replaced in one rename; measure it; write the report."""
    t0 = time.perf_counter()
    model, tmp = out / "model", out / "model.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    mini_pipeline.save(pipe, tmp)
    if model.exists():
        shutil.rmtree(model)
    os.replace(tmp, model)
    scaling = float(pipe.vae.config.scaling_factor)
    report["model"] = {"path": str(model), "megabytes": round(_megabytes(model), 2), "scaling_factor": scaling}
    report["adherence"] = check_model(config, model, out / "model_samples.png")
    report["stages"]["save"] = {"wall_s": round(time.perf_counter() - t0, 1)}
    write_json(out / "report.json", report)
    log(f"model: {model} ({report['model']['megabytes']} MB); single-shape colour adherence "
        f"{report['adherence']['single_shape']:.2f}; samples {out / 'model_samples.png'}")
    return model


def _train_controlnet(config: MiniConfig, model: Path, out: Path, condition: str, budget_s: float, report: dict,
                      progress: bool, log) -> None:
    c = config.controlnet
    done = train_controlnet(model, out / "controlnets" / condition, condition, c.budget_share * budget_s,
                            samples=config.controlnet_samples, batch_size=c.batch_size, learning_rate=c.lr,
                            max_steps=c.max_steps, world_seed=config.world_seed, size=config.image_size,
                            progress=progress)
    report["stages"][f"controlnet-{condition}"] = {"steps": done["steps"], "wall_s": done["wall_s"],
                                                   "final_loss": done["final_loss"]}
    log(f"controlnet-{condition}: {done['steps']} steps in {done['wall_s']:.0f} s -> {done['path']}")


def check_model(config: MiniConfig, folder: Path, grid_path: Path, n: int = 32) -> dict:
    """Load the saved folder with diffusers and measure colour adherence on held-out captions."""
    pipe = mini_pipeline.load(folder)
    pipe.set_progress_bar_config(disable=True)
    measured = {}
    for name, shapes in (("single_shape", 1), ("multi_shape", 3)):
        samples = list(World(config.world_seed + 1, config.image_size, min_shapes=shapes, max_shapes=shapes,
                             conditions=()).take(n))
        images = pipe([s.caption for s in samples], num_inference_steps=config.sample_steps, guidance_scale=4.0, output_type="np",
                      generator=torch.Generator().manual_seed(0), height=config.image_size, width=config.image_size).images
        images = (images * 255).round().astype(np.uint8)
        measured[name] = adherence(images, [s.scene for s in samples])
        if shapes == 1:
            save_grid([[s.image for s in samples[:8]], list(images[:8]),
                       [s.image for s in samples[8:16]], list(images[8:16])], grid_path, scale=3)
    return measured


def _line(r: dict) -> str:
    losses = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("stage", "steps", "seconds", "wall_s"))
    return f"{r['stage']}: {r['steps']} steps, {r['seconds']:.0f} s training, {r['wall_s']:.0f} s wall; {losses}"


def _megabytes(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
