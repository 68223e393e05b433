"""`train(config)`: the whole training run in one readable loop.

accelerate provides devices, DDP and mixed precision; diffusers the U-Net, VAE and schedulers;
transformers the text encoder. What is ours: the paper's recipe, the split forward, deterministic
data order and random draws (so resumed and multi-process runs match single uninterrupted ones),
atomic checkpoints, signal handling, non-finite-loss guards, validation and the outputs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from controlnet.errors import ControlNetError, InputError
from controlnet.training import checkpoint as ckpt
from controlnet.training.base import Base, load_base, model_hash
from controlnet.training.cache import FeatureCache
from controlnet.training.config import TrainConfig
from controlnet.training.data import (
    GlobalBatches,
    PairDataset,
    Processing,
    WebDatasetPairs,
    collate,
    detect_format,
    open_sources,
    stream_batches,
)
from controlnet.training.denoiser import ControlledDenoiser
from controlnet.training.step import diffusion_loss, draw, drop_prompts, encode_images, encode_prompts

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TrainingDiverged(ControlNetError):
    """The loss was NaN/inf too many steps in a row."""


@dataclass
class TrainResult:
    output_dir: Path
    step: int
    log: list[dict] = field(default_factory=list)  # one entry per step of this run
    fidelity: list[dict] = field(default_factory=list)
    bad_samples: int = 0
    interrupted: int | None = None  # the signal number that stopped the run
    checkpoint: Path | None = None


class _Signals:
    """SIGTERM/SIGINT set a flag; the loop saves a checkpoint and stops at the end of the step.
    A second SIGINT stops at once."""

    def __init__(self):
        self.received: int | None = None
        self.previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def make_optimizer(config: TrainConfig, groups: list[dict]):
    kwargs = dict(betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.adam_weight_decay,
                  eps=config.adam_epsilon)
    if config.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise InputError("--use-8bit-adam needs bitsandbytes: pip install bitsandbytes (CUDA only)") from None
        return bnb.optim.AdamW8bit(groups, **kwargs)
    # fused: one kernel over all tensors instead of a Python loop per tensor (CPU and CUDA, fp32 params)
    fused = all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, fused=fused, **kwargs)


def _build_controlnet(config: TrainConfig, base: Base):
    from controlnet.nn import ControlNet

    if config.controlnet:
        from controlnet.checkpoints import load_controlnet

        return load_controlnet(config.controlnet)
    torch.manual_seed(config.seed)  # the hint encoder's random init, the same in every process
    return ControlNet.from_unet(base.unet, vae_scale_factor=base.vae_scale_factor, hint_encoder=config.hint_encoder,
                                connection_init=config.connection_init, copy=config.copy)


def train(config: TrainConfig, base: Base | None = None) -> TrainResult:
    """Train a ControlNet as `config` says; returns when `max_steps` is reached or a signal arrives."""
    with torch.enable_grad():  # whatever the caller's autograd mode (e.g. inside torch.no_grad())
        return _train(config, base)


def _train(config: TrainConfig, base: Base | None) -> TrainResult:
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    config.validate()
    out = Path(config.output_dir)
    log_with = None
    if config.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            warnings.warn("tensorboard is not installed: logging to train_log.jsonl only", stacklevel=2)
    _reset_single_process_state()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=log_with, project_dir=str(out),
                              cpu=_launched_on_cpus())
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # ---- models: the base locked, the ControlNet in fp32 (master weights), everything else in weight_dtype
    base = (base or load_base(config.base_model)).lock()
    prediction_type = config.prediction_type or base.scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise InputError(f"the base model predicts {prediction_type!r}; training supports epsilon and v_prediction")
    weight_dtype = DTYPES[config.mixed_precision]
    controlnet = _build_controlnet(config, base).float().train()
    if config.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
    for module, dtype in ((base.vae, weight_dtype), (base.text_encoder, weight_dtype),
                          (base.unet, torch.float32 if config.unlock_decoder else weight_dtype)):
        module.to(device) if module.dtype == dtype else module.to(device, dtype)
    denoiser = ControlledDenoiser(controlnet, base.unet, only_mid_control=config.only_mid_control,
                                  split=config.split_unet, checkpoint_decoder=config.gradient_checkpointing)
    groups = [{"params": list(controlnet.parameters()), "lr": config.learning_rate}]
    if config.unlock_decoder:
        decoder = denoiser.decoder_parameters()
        for p in decoder:
            p.requires_grad_(True)
        groups.append({"params": decoder, "lr": config.decoder_learning_rate})
    optimizer = make_optimizer(config, groups)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                 num_training_steps=config.max_steps)
    denoiser, optimizer = accelerator.prepare(denoiser, optimizer)
    trainable = [p for g in groups for p in g["params"]]

    # ---- where to start
    state = {"step": 0, "samples_seen": 0, "bad_samples": 0, "fidelity": [], "world": world}
    resume_from = ckpt.find_checkpoint(config.resume, out) if config.resume else None
    if resume_from is not None:
        state = _resume(resume_from, config, controlnet, denoiser, optimizer, lr_scheduler, accelerator, rank)
    elif config.resume and config.resume != "latest":
        raise InputError(f"--resume {config.resume}: no checkpoint found")
    step = state["step"]
    accum = config.gradient_accumulation_steps
    global_batch = config.batch_size * world

    # ---- data
    fmt = config.data_format if config.data_format != "auto" else detect_format(config.data)
    processing = Processing(config.resolution, config.annotator, config.random_flip, config.seed)
    cols = dict(image_column=config.image_column, conditioning_image_column=config.conditioning_image_column,
                caption_column=config.caption_column)
    if fmt == "webdataset":
        skip = state["samples_seen"] // world
        stream = WebDatasetPairs(config.data, processing, rank=rank, world=world, skip=skip, **cols)
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.num_workers)
        batches = stream_batches(loader, config.batch_size)
        data_description = f"{len(stream.urls)} WebDataset shard(s)"
    else:
        dataset = PairDataset(open_sources(config.data, fmt, **cols), processing, config.max_train_samples)
        sampler = GlobalBatches(len(dataset), config.batch_size, rank, world, config.seed, start=step * accum)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers,
                                             collate_fn=collate, persistent_workers=config.num_workers > 0)
        batches = iter(loader)
        data_description = f"{len(dataset)} pairs ({fmt}: {', '.join(Path(p).name for p in config.data)})"

    cache = None
    if config.cache_dir:
        if config.random_flip:
            warnings.warn("--random-flip changes the pixels every epoch: latents are not cached", stacklevel=2)
        cache = FeatureCache(config.cache_dir, f"{model_hash(base.vae)}-{weight_dtype}".replace("torch.", ""),
                             f"{model_hash(base.text_encoder)}-{weight_dtype}".replace("torch.", ""))
    latent_hw = config.resolution // base.vae_scale_factor
    latent_shape = (base.unet.config.in_channels, latent_hw, latent_hw)
    num_timesteps = base.scheduler.config.num_train_timesteps
    seen_bad: set = set()

    def features(batch, draws):
        images = batch["image"].to(device)
        prompts = drop_prompts(batch["prompt"], draws.drop_prompt)
        if cache is not None and not config.random_flip:
            mean, std = cache.posterior(batch["key"], images, lambda x: encode_images(base.vae, x))
            ehs = cache.text(prompts, lambda p: encode_prompts(base.tokenizer, base.text_encoder, p)).to(device)
        else:
            mean, std = encode_images(base.vae, images)
            ehs = encode_prompts(base.tokenizer, base.text_encoder, prompts)
        latents = (mean.float() + std.float() * draws.posterior.to(device)) * base.latent_scale
        return latents, ehs, prompts

    if main:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "train_config.json")
        _truncate_log(out / "train_log.jsonl", step)
        if log_with:
            accelerator.init_trackers("controlnet", config=_flat_hparams(config))
    result = TrainResult(output_dir=out, step=step, fidelity=list(state["fidelity"]), bad_samples=state["bad_samples"])
    bar = tqdm(total=config.max_steps, initial=step, disable=not (main and config.progress), dynamic_ncols=True,
               desc="train")
    consecutive_bad, ema, t_last = 0, None, time.perf_counter()
    micro = step * accum

    with _Signals() as signals:
        while step < config.max_steps:
            t0 = time.perf_counter()
            losses, empties, step_ok = [], 0, True
            for m in range(accum):
                batch = next(batches)
                for idx, _reason in batch["skipped"]:
                    if idx not in seen_bad:
                        seen_bad.add(idx)
                        state["bad_samples"] += 1
                draws = draw(config.seed, micro, global_batch, slice(rank * config.batch_size, (rank + 1) * config.batch_size),
                             latent_shape, num_timesteps, config.empty_prompt_prob)
                micro += 1
                latents, ehs, prompts = features(batch, draws)
                empties += sum(p == "" for p in prompts)
                sync = m == accum - 1 or world == 1
                with contextlib.nullcontext() if sync else accelerator.no_sync(denoiser), accelerator.autocast():
                    loss = diffusion_loss(denoiser, base.scheduler, latents.to(weight_dtype), ehs, batch["hint"].to(device),
                                          draws.noise.to(device, weight_dtype), draws.timesteps.to(device), prediction_type)
                finite = _all_true(accelerator, bool(torch.isfinite(loss.detach())), world)
                if not finite:
                    step_ok = False
                    continue
                if step_ok:
                    accelerator.backward(loss / accum)
                losses.append(loss.detach().float())
            grad_norm = None
            if step_ok:
                grad_norm = accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                if grad_norm is not None and not torch.isfinite(grad_norm) and config.mixed_precision != "fp16":
                    step_ok = False  # fp16's grad scaler skips such steps itself while it calibrates
            if step_ok:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            lr_scheduler.step()
            step += 1
            state["samples_seen"] += global_batch * accum

            # one collective per step: mean loss across processes, and whether anyone got a signal
            mean_loss = torch.stack(losses).mean() if losses else torch.tensor(float("nan"))
            packed = torch.tensor([mean_loss.item(), float(signals.received is not None)], device=device,
                                  dtype=torch.float64)
            if world > 1:
                packed = accelerator.reduce(packed, reduction="sum")
                packed[0] /= world
            loss_value, stop = packed[0].item(), packed[1].item() > 0

            if not step_ok:
                consecutive_bad += 1
                if main:
                    warnings.warn(f"step {step}: loss or gradient is NaN/inf, step skipped "
                                  f"({consecutive_bad} in a row)", stacklevel=1)
                if consecutive_bad >= config.max_bad_steps:
                    raise TrainingDiverged(
                        f"the loss was NaN/inf for {consecutive_bad} steps in a row (step {step}): try a lower "
                        "--learning-rate, --mixed-precision bf16 instead of fp16 (fp16 overflows in SD's VAE and "
                        "attention), a smaller --max-grad-norm, or check the data; resume from the last good "
                        f"checkpoint with --resume latest ({out / 'checkpoints'})")
            else:
                consecutive_bad = 0

            dt = time.perf_counter() - t0
            entry = {"step": step, "loss": loss_value, "lr": lr_scheduler.get_last_lr()[0],
                     "empty_prompts": empties, "batch": config.batch_size * accum,
                     "samples_per_s": global_batch * accum / max(dt, 1e-9)}
            if grad_norm is not None:
                entry["grad_norm"] = float(grad_norm)
            result.log.append(entry)
            if main:
                with open(out / "train_log.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
                if math.isfinite(loss_value):
                    ema = loss_value if ema is None else 0.95 * ema + 0.05 * loss_value
                bar.update(1)
                if step % config.log_every == 0 or step == config.max_steps:
                    now = time.perf_counter()
                    rate = global_batch * accum * config.log_every / max(now - t_last, 1e-9)
                    t_last = now
                    bar.set_postfix(loss=f"{ema:.4f}" if ema is not None else "nan", samples_s=f"{rate:.1f}")
                    if log_with:
                        accelerator.log({"loss": loss_value, "lr": entry["lr"], "samples_per_s": rate,
                                         "empty_prompt_fraction": empties / entry["batch"],
                                         "bad_samples": state["bad_samples"]}, step=step)

            if config.validate_every and config.validation_images and step % config.validate_every == 0:
                _validate(config, accelerator, controlnet, base, step, out, state, log_with)

            periodic = step % config.checkpoint_every == 0 or step == config.max_steps  # the end can be extended
            if periodic or stop:
                state["step"] = step
                result.checkpoint = _save(config, accelerator, controlnet, denoiser, optimizer, lr_scheduler,
                                          state, out, step)
            if stop:
                result.interrupted = int(signals.received or signal.SIGTERM)
                if main:
                    print(f"\nstopped by signal {result.interrupted} at step {step}; resume with --resume latest",
                          file=sys.stderr)
                break
    bar.close()
    result.step = step
    result.bad_samples = state["bad_samples"]
    if result.interrupted is None:
        if config.validation_images and (not config.validate_every or step % config.validate_every):
            _validate(config, accelerator, controlnet, base, step, out, state, log_with)
        _finish(config, accelerator, controlnet, base, out, state, step, result, data_description)
    result.fidelity = list(state["fidelity"])
    accelerator.wait_for_everyone()
    if log_with:
        accelerator.end_training()
    return result


# ---------------------------------------------------------------- pieces of the loop


def _reset_single_process_state() -> None:
    """accelerate keeps one global state per process; a second `train()` in the same single process
    (notebooks, tests) may use another precision, so start it afresh. Distributed runs keep theirs."""
    from accelerate.state import AcceleratorState

    shared = AcceleratorState._shared_state
    if shared and shared.get("num_processes", 1) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)


def _launched_on_cpus() -> bool:
    """Several processes and no GPU: tell accelerate to use gloo on CPUs (it would otherwise start
    independent single processes). Also catch `accelerate launch --cpu --num_processes N`, which
    starts one process only (accelerate needs mpirun for several CPU processes)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1 and os.environ.get("MASTER_PORT") and os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true"):
        warnings.warn("`accelerate launch --cpu --num_processes N` starts a single process (accelerate runs several "
                      "CPU processes only through mpirun): this run uses 1 process. For N CPU processes use "
                      "`accelerate launch --multi_gpu --num_processes N -m controlnet train ...` on a machine "
                      "without GPUs, or `torchrun --nproc_per_node N -m controlnet train ...`", stacklevel=3)
    return world > 1 and not torch.cuda.is_available()


def _all_true(accelerator, flag: bool, world: int) -> bool:
    """Whether every process has `flag`: all must skip a bad micro-batch together or DDP would hang."""
    if world == 1:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=accelerator.device)
    return accelerator.reduce(t, reduction="sum").item() == 0


def _flat_hparams(config: TrainConfig) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in config.to_dict().items()}


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (written by a run that was killed later)."""
    if not path.is_file():
        return
    keep = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in keep))


def _save(config, accelerator, controlnet, denoiser, optimizer, lr_scheduler, state, out, step) -> Path | None:
    from accelerate.utils import gather_object

    rngs = gather_object([ckpt.rng_state()]) if accelerator.num_processes > 1 else [ckpt.rng_state()]
    path = None
    if accelerator.is_main_process:
        decoder = None
        if config.unlock_decoder:
            unet = accelerator.unwrap_model(denoiser).unet
            decoder = {n: p for n, p in unet.named_parameters() if p.requires_grad}
        state = dict(state, config=config.to_dict(), world=accelerator.num_processes)
        path = ckpt.save_checkpoint(out / "checkpoints", step, controlnet=controlnet, optimizer=optimizer,
                                    lr_scheduler=lr_scheduler, state=state, rng_states=rngs, decoder=decoder,
                                    scaler=accelerator.scaler, keep=config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def _resume(path: Path, config, controlnet, denoiser, optimizer, lr_scheduler, accelerator, rank) -> dict:
    from safetensors.torch import load_file

    state = ckpt.read_state(path)
    saved = TrainConfig.from_dict(state.get("config", {}))
    changed = [k for k, v in saved.to_dict().items()
               if k not in TrainConfig.RESUMABLE_CHANGES and getattr(config, k) != v]
    if changed and accelerator.is_main_process:
        warnings.warn(f"resuming {path} with changed settings {', '.join(changed)}: the run will not follow the "
                      "curve it would have followed", stacklevel=2)
    if saved.batch_size * state.get("world", 1) != config.batch_size * accelerator.num_processes:
        warnings.warn("the global batch (batch size x processes) differs from the checkpoint's: the data order "
                      "continues by samples seen, the loss curve will differ", stacklevel=2)
    weights = path / "controlnet" / "diffusion_pytorch_model.safetensors"
    try:
        controlnet.load_state_dict(load_file(str(weights)), strict=True)
    except (OSError, RuntimeError) as exc:
        raise ckpt.CheckpointError(f"{weights} cannot be loaded into this ControlNet ({exc}); was the checkpoint made "
                                   "with a different base model or --copy/--hint-encoder?") from None
    decoder = ckpt.load_decoder(path)
    if decoder is not None and config.unlock_decoder:
        unet = accelerator.unwrap_model(denoiser).unet
        unet.load_state_dict(decoder, strict=False)
    try:
        optimizer.load_state_dict(ckpt.load_tensors(path / "optimizer.pt"))
    except ValueError as exc:
        warnings.warn(f"optimizer state not restored ({exc}); it restarts from zero moments", stacklevel=2)
    lr_scheduler.load_state_dict(ckpt.load_tensors(path / "scheduler.pt"))
    if accelerator.scaler is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(ckpt.load_tensors(path / "scaler.pt"))
    rng = path / "rng" / f"rank-{rank}.pt"
    if rng.is_file():
        ckpt.set_rng_state(ckpt.load_tensors(rng))
    samples_per_step = saved.batch_size * state.get("world", 1) * saved.gradient_accumulation_steps
    if accelerator.is_main_process:
        print(f"resuming from {path} at step {state['step']}", file=sys.stderr)
    state.setdefault("samples_seen", state["step"] * samples_per_step)
    state.setdefault("fidelity", [])
    state.setdefault("bad_samples", 0)
    return state


def _validate(config, accelerator, controlnet, base, step, out, state, log_with) -> None:
    from controlnet.training.validation import plot_curves, run_validation

    if accelerator.is_main_process:
        scores = run_validation(
            controlnet, base, config.validation_images, config.validation_prompts, resolution=config.resolution,
            out_png=out / "validation" / f"step-{step:06d}.png", num_samples=config.num_validation_samples,
            steps=config.validation_steps, guidance=config.guidance_scale, seed=config.seed,
            annotator=config.validation_annotator, only_mid_control=config.only_mid_control)
        if scores:
            state["fidelity"].append({"step": step, **scores})
            if log_with:
                accelerator.log(scores, step=step)
            metric = None
            if config.validation_annotator:
                from controlnet.evaluation import metric_for

                metric = metric_for(config.validation_annotator).name
            plot_curves([], state["fidelity"], out, metric or "fidelity")
        if log_with:
            _log_image(accelerator, out / "validation" / f"step-{step:06d}.png", step)
    accelerator.wait_for_everyone()


def _log_image(accelerator, png: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", np.asarray(Image.open(png)), step, dataformats="HWC")


def _finish(config, accelerator, controlnet, base, out, state, step, result, data_description) -> None:
    """The trained ControlNet in the diffusers layout (+ original on request), plots and a model card."""
    from controlnet.training.card import write_model_card
    from controlnet.training.validation import plot_curves

    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    controlnet.save_pretrained(out, safe_serialization=True)
    original = None
    if config.save_original:
        from controlnet.checkpoints import save_controlnet

        original = "controlnet-original.safetensors"
        save_controlnet(controlnet, out / original, layout="original")
    if config.unlock_decoder:
        base.unet.save_pretrained(out / "unet", safe_serialization=True)
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines() if ln.strip()]
    metric = None
    if config.validation_annotator:
        from controlnet.evaluation import metric_for

        metric = metric_for(config.validation_annotator).name
    plot_curves(log, state["fidelity"], out, metric or "fidelity")
    finite = [r["loss"] for r in log[-20:] if math.isfinite(r["loss"])]
    write_model_card(out, config=config, step=step, data_description=data_description, fidelity=state["fidelity"],
                     metric=metric, final_loss=sum(finite) / len(finite) if finite else None,
                     bad_samples=state["bad_samples"], original_file=original)
