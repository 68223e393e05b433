"""`train(config)`: the whole training run, one readable piece per stage.

accelerate provides devices, DDP and mixed precision; diffusers the U-Net, VAE and schedulers;
transformers the text encoder. What is ours: the paper's recipe, the split forward, deterministic
data order and random draws (so resumed and multi-process runs match single uninterrupted ones),
atomic checkpoints, signal handling, non-finite-loss guards, validation and the outputs.

Every input is checked before the first step (values in `TrainConfig.validate`, files and folders
in `_check_places`, the models' fit in `_load_models`): a run never fails at its end on something
known at its start.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from controlnet.errors import ControlNetError, InputError
from controlnet.files import writable_folder, write_text
from controlnet.pipeline.text import encode_sd
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
from controlnet.training.step import diffusion_loss, draw, drop_prompts, encode_images

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
LOG = "train_log.jsonl"


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


@dataclass
class _Run:
    """What the loop's pieces share during one run: models, data, and counters."""

    config: TrainConfig
    accelerator: object
    out: Path
    log_with: str | None
    recipe: object = None  # the base's side of the loop: UNetRecipe, or training.dit.DiTRecipe
    base: Base | None = None
    controlnet: torch.nn.Module | None = None
    denoiser: torch.nn.Module | None = None
    optimizer: object = None
    lr_scheduler: object = None
    trainable: list = field(default_factory=list)
    weight_dtype: torch.dtype = torch.float32
    prediction_type: str = "epsilon"
    state: dict = field(default_factory=dict)  # what a checkpoint stores: step, samples seen, counters, curves
    batches: Iterator | None = None
    data_description: str = ""
    cache: FeatureCache | None = None
    step: int = 0
    micro: int = 0  # micro-batches drawn so far: the random draws' index
    seen_bad: set = field(default_factory=set)
    consecutive_bad: int = 0
    ema: float | None = None
    t_last: float = 0.0
    bar: object = None

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def samples_per_step(self) -> int:
        return self.config.batch_size * self.world * self.config.gradient_accumulation_steps


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


def train(config: TrainConfig, base: Base | None = None) -> TrainResult:
    """Train a ControlNet as `config` says; returns when `max_steps` is reached or a signal arrives."""
    with torch.enable_grad():  # whatever the caller's autograd mode (e.g. inside torch.no_grad())
        return _train(config, base)


def _train(config: TrainConfig, base: Base | None) -> TrainResult:
    run = _setup(config, base)
    result = TrainResult(output_dir=run.out, step=run.step, fidelity=list(run.state["fidelity"]),
                         bad_samples=run.state["bad_samples"])
    with _Signals() as signals:
        while run.step < config.max_steps:
            entry, stop = _train_step(run, signals)
            _log_step(run, entry, result)
            _after_step(run, result, stop, signals)
            if stop:
                break
    return _end(run, result)


# ---------------------------------------------------------------- setup, cheapest checks first


def _setup(config: TrainConfig, base: Base | None) -> _Run:
    """Everything before step 1: inputs checked, data opened, models loaded, state restored."""
    config.validate()
    recipe = _recipe(config, base)
    _check_places(config)
    run = _Run(config, *_accelerator(config, recipe.accelerator_kwargs()), recipe=recipe)
    resume_from = _checkpoint_to_resume(run)
    fmt, dataset = _open_data(config)
    recipe.load_models(run, base, dataset)
    _make_optimizer(run)
    run.state = _resume(run, resume_from) if resume_from else {
        "step": 0, "samples_seen": 0, "bad_samples": 0, "fidelity": [], "world": run.world}
    run.step = run.state["step"]
    run.micro = run.step * config.gradient_accumulation_steps
    run.batches, run.data_description = _batches(run, fmt, dataset)
    run.cache = recipe.feature_cache(run)
    _open_outputs(run)
    return run


def _recipe(config: TrainConfig, base: Base | None):
    """The base's side of the loop: a transformer base's (SD3, Flux) or the U-Net's."""
    from controlnet.training.dit import check_options, recipe_for

    if base is not None:
        check_options(config, None)
        return UNetRecipe()
    return recipe_for(config) or UNetRecipe()


class UNetRecipe:
    """What the loop asks of a U-Net base (SD 1.x/2.x/XL): the models, a micro-batch's random draws, its
    features (latents, text), the diffusion loss, the feature cache, the validation sampler."""

    def accelerator_kwargs(self) -> list:
        return []

    def load_models(self, run: _Run, base: Base | None, dataset: PairDataset | None = None) -> None:
        _load_models(run, base, dataset)

    def draw(self, run: _Run):
        config = run.config
        return draw(config.seed, run.micro, config.batch_size * run.world,
                    slice(run.rank * config.batch_size, (run.rank + 1) * config.batch_size), _latent_shape(run),
                    run.base.scheduler.config.num_train_timesteps, config.empty_prompt_prob)

    def features(self, run: _Run, batch: dict, draws) -> tuple[tuple, list[str]]:
        latents, ehs, prompts = _features(run, batch, draws)
        return (latents, ehs), prompts

    def loss(self, run: _Run, batch: dict, draws, features: tuple) -> torch.Tensor:
        (latents, ehs), device = features, run.accelerator.device
        return diffusion_loss(run.denoiser, run.base.scheduler, latents.to(run.weight_dtype), ehs,
                              batch["hint"].to(device), draws.noise.to(device, run.weight_dtype),
                              draws.timesteps.to(device), run.prediction_type, control_types=_union_types(run, batch))

    def feature_cache(self, run: _Run) -> FeatureCache | None:
        return _feature_cache(run)

    def sample(self, *args, **kwargs):
        from controlnet.training.validation import sample

        return sample(*args, **kwargs)

    def save_model(self, controlnet, folder: Path) -> None:
        ckpt.save_model_folder(controlnet, folder)


def _check_places(config: TrainConfig) -> None:
    """Files and folders, before any model loads: a bad one fails in seconds, not after the training."""
    from controlnet.training.validation import check_condition_images

    out = writable_folder(config.output_dir, "--output-dir")
    if not config.resume and ckpt.list_checkpoints(out / "checkpoints"):
        raise InputError(f"--output-dir {out} holds the checkpoints of an earlier run: pass --resume latest to "
                         "continue it, or choose another --output-dir")
    if config.controlnet:
        from controlnet.assets import resolve_controlnet

        if not resolve_controlnet(config.controlnet).exists():
            raise InputError(f"--controlnet {config.controlnet}: no such file or folder")
    check_condition_images(config.validation_images, config.resolution, config.inpaint_maps)


def _accelerator(config: TrainConfig, kwargs_handlers: list = ()) -> tuple[object, Path, str | None]:
    """(accelerate's Accelerator, the output folder, the tracker: "tensorboard" or None)."""
    from accelerate import Accelerator

    log_with = None
    if config.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401

            log_with = "tensorboard"
        except ImportError:
            warnings.warn("tensorboard is not installed: logging to train_log.jsonl only", stacklevel=3)
    _reset_single_process_state()
    out = Path(config.output_dir)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, log_with=log_with, project_dir=str(out),
                              cpu=_launched_on_cpus(), kwargs_handlers=list(kwargs_handlers))
    if config.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return accelerator, out, log_with


def _checkpoint_to_resume(run: _Run) -> Path | None:
    if not run.config.resume:
        return None
    found, skipped = ckpt.find_checkpoint(run.config.resume, run.out)
    if run.main:
        for path, why in skipped:
            print(f"skipping incomplete checkpoint {path} ({why})", file=sys.stderr)
    return found


def _processing(config: TrainConfig) -> Processing:
    return Processing(config.resolution, config.annotator, config.random_flip, config.seed, config.inpaint_maps)


def _columns(config: TrainConfig) -> dict:
    return dict(image_column=config.image_column, conditioning_image_column=config.conditioning_image_column,
                caption_column=config.caption_column)


def _open_data(config: TrainConfig) -> tuple[str, PairDataset | None]:
    """(format, the map-style dataset; None for streamed shards, opened once the resume position is known)."""
    fmt = config.data_format if config.data_format != "auto" else detect_format(config.data)
    if fmt == "webdataset":
        return fmt, None
    sources = open_sources(config.data, fmt, **_columns(config))
    return fmt, PairDataset(sources, _processing(config), config.max_train_samples)


def _load_models(run: _Run, base: Base | None, dataset: PairDataset | None = None) -> None:
    """The base locked, the ControlNet in fp32 (master weights), everything else in the mixed-precision dtype."""
    config = run.config
    base = (base or load_base(config.base_model)).lock()
    prediction_type = config.prediction_type or base.scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise InputError(f"the base model predicts {prediction_type!r}; training supports epsilon and v_prediction")
    if config.resolution % base.vae_scale_factor:
        raise InputError(f"--resolution {config.resolution} is not a multiple of the base model's VAE factor "
                         f"{base.vae_scale_factor}")
    weight_dtype = DTYPES[config.mixed_precision]
    controlnet = _build_controlnet(config, base, dataset).float().train()
    if config.gradient_checkpointing:
        controlnet.enable_gradient_checkpointing()
    device = run.accelerator.device
    for module, dtype in ((base.vae, weight_dtype), (base.text_encoder, weight_dtype),
                          (base.unet, torch.float32 if config.unlock_decoder else weight_dtype)):
        module.to(device) if module.dtype == dtype else module.to(device, dtype)
    run.denoiser = ControlledDenoiser(controlnet, base.unet, only_mid_control=config.only_mid_control,
                                      split=config.split_unet, checkpoint_decoder=config.gradient_checkpointing)
    run.base, run.controlnet, run.weight_dtype, run.prediction_type = base, controlnet, weight_dtype, prediction_type


def _build_controlnet(config: TrainConfig, base: Base, dataset: PairDataset | None = None):
    from controlnet.nn import ControlNet
    from controlnet.nn.union import UnionControlNet
    from controlnet.training import control_types as ct

    if config.controlnet:
        from controlnet.assets import resolve_controlnet
        from controlnet.checkpoints import load_controlnet

        controlnet = load_controlnet(resolve_controlnet(config.controlnet))
        _check_fits(controlnet, base, config)
        if isinstance(controlnet, UnionControlNet):
            if config.validation_images:
                raise InputError(f"--validation-images: --controlnet {config.controlnet} is a union ControlNet, whose "
                                 "validation sampling is not supported yet; leave them out and use `controlnet evaluate`")
            if dataset is not None:
                ct.check_fit(ct.scan_types(dataset), controlnet.config.num_control_type, config.controlnet)
        elif config.union:
            raise InputError(f"--union: --controlnet {config.controlnet} is a plain ControlNet (one condition kind); "
                             "start from a union ControlNet or leave --controlnet out to copy the U-Net")
        return controlnet
    torch.manual_seed(config.seed)  # the hint encoder's random init, the same in every process
    kind, extra = ControlNet, {}
    if config.union:
        slots = ct.type_slots(ct.scan_types(dataset)) if dataset is not None else ct.XINSIR_TYPES
        kind, extra = UnionControlNet, {"num_control_type": slots}
    return kind.from_unet(base.unet, vae_scale_factor=base.vae_scale_factor, hint_encoder=config.hint_encoder,
                          connection_init=config.connection_init, copy=config.copy, **extra)


def _check_fits(controlnet, base: Base, config: TrainConfig) -> None:
    """A ControlNet made for another base model fails deep inside a matmul; say so before training."""
    from controlnet.nn import family_of
    from controlnet.nn.dit_controlnet import refuse_on_unet

    refuse_on_unet(controlnet, f"--controlnet {config.controlnet}", family_of(base.unet.config))

    def plain(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    cn, unet = controlnet.config, base.unet.config
    keys = ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim", "addition_embed_type",
            "addition_time_embed_dim", "projection_class_embeddings_input_dim")
    if "num_control_type" in cn and cn.get("addition_embed_type") is None:  # a union's own control-type width
        keys = tuple(k for k in keys if k != "addition_time_embed_dim")
    differ = [f"{k} {plain(cn.get(k))} vs {plain(unet.get(k))}" for k in keys if plain(cn.get(k)) != plain(unet.get(k))]
    if len(cn.get("down_block_types", ())) != len(unet.get("down_block_types", ())):
        differ.append(f"{len(cn['down_block_types'])} vs {len(unet['down_block_types'])} levels")
    if controlnet.hint_downscale != base.vae_scale_factor:
        differ.append(f"hint downscale {controlnet.hint_downscale} vs the VAE's factor {base.vae_scale_factor}")
    if differ:
        raise InputError(f"--controlnet {config.controlnet} ({family_of(cn)}) was made for another base model than "
                         f"{config.base_model} ({family_of(unet)}): {'; '.join(differ)}. Start from a ControlNet of "
                         "this base model, or leave --controlnet out to copy its U-Net")


def _make_optimizer(run: _Run) -> None:
    from diffusers.optimization import get_scheduler

    config = run.config
    groups = [{"params": list(run.controlnet.parameters()), "lr": config.learning_rate}]
    if config.unlock_decoder:
        decoder = run.denoiser.decoder_parameters()
        for p in decoder:
            p.requires_grad_(True)
        groups.append({"params": decoder, "lr": config.decoder_learning_rate})
    optimizer = make_optimizer(config, groups)
    run.lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps,
                                     num_training_steps=config.max_steps)
    run.denoiser, run.optimizer = run.accelerator.prepare(run.denoiser, optimizer)
    run.trainable = [p for g in groups for p in g["params"]]


def _batches(run: _Run, fmt: str, dataset: PairDataset | None) -> tuple[Iterator, str]:
    """(this process's batches from the run's position on, a description of the data for the model card)."""
    config = run.config
    if fmt == "webdataset":
        skip = run.state["samples_seen"] // run.world
        stream = WebDatasetPairs(config.data, _processing(config), rank=run.rank, world=run.world, skip=skip,
                                 **_columns(config))
        loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.num_workers)
        return stream_batches(loader, config.batch_size), f"{len(stream.urls)} WebDataset shard(s)"
    sampler = GlobalBatches(len(dataset), config.batch_size, run.rank, run.world, config.seed,
                            start=run.step * config.gradient_accumulation_steps)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=config.num_workers,
                                         collate_fn=collate, persistent_workers=config.num_workers > 0)
    return iter(loader), f"{len(dataset)} pairs ({fmt}: {', '.join(Path(p).name for p in config.data)})"


def _feature_cache(run: _Run) -> FeatureCache | None:
    config, base = run.config, run.base
    if not config.cache_dir:
        return None
    if config.random_flip:
        warnings.warn("--random-flip changes the pixels every epoch: latents are not cached", stacklevel=3)
    dtype = str(run.weight_dtype).replace("torch.", "")
    return FeatureCache(config.cache_dir, f"{model_hash(base.vae)}-{dtype}", f"{model_hash(base.text_encoder)}-{dtype}")


def _open_outputs(run: _Run) -> None:
    """The run's config, its log cut back to the step we start from, trackers and the progress bar."""
    from tqdm.auto import tqdm

    config = run.config
    if run.main:
        config.save(run.out / "train_config.json")
        _truncate_log(run.out / LOG, run.step)
        if run.log_with:
            run.accelerator.init_trackers("controlnet", config=_flat_hparams(config))
    run.bar = tqdm(total=config.max_steps, initial=run.step, disable=not (run.main and config.progress),
                   dynamic_ncols=True, desc="train")
    run.t_last = time.perf_counter()


# ---------------------------------------------------------------- one step


def _train_step(run: _Run, signals: _Signals) -> tuple[dict, bool]:
    """One optimizer step over the accumulated micro-batches: (its log entry, whether to stop now)."""
    config, accelerator = run.config, run.accelerator
    t0 = time.perf_counter()
    losses, empties, ok = _accumulate(run)
    grad_norm = None
    if ok:
        grad_norm = accelerator.clip_grad_norm_(run.trainable, config.max_grad_norm)
        if grad_norm is not None and not torch.isfinite(grad_norm) and config.mixed_precision != "fp16":
            ok = False  # fp16's grad scaler skips such steps itself while it calibrates
    if ok:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.lr_scheduler.step()
    run.step += 1
    run.state["samples_seen"] += run.samples_per_step
    loss_value, stop = _reduce(run, losses, signals)
    _guard_divergence(run, ok)
    entry = {"step": run.step, "loss": loss_value, "lr": run.lr_scheduler.get_last_lr()[0],
             "empty_prompts": empties, "batch": config.batch_size * config.gradient_accumulation_steps,
             "samples_per_s": run.samples_per_step / max(time.perf_counter() - t0, 1e-9)}
    if grad_norm is not None:
        entry["grad_norm"] = float(grad_norm)
    return entry, stop


def _accumulate(run: _Run) -> tuple[list[torch.Tensor], int, bool]:
    """Forward and backward of each micro-batch: (finite losses, empty prompts seen, whether all were finite).
    A non-finite micro-batch makes the whole step skip, on every process together."""
    accelerator, accum = run.accelerator, run.config.gradient_accumulation_steps
    losses, empties, ok = [], 0, True
    for m in range(accum):
        batch = next(run.batches)
        for idx, _reason in batch["skipped"]:
            if idx not in run.seen_bad:
                run.seen_bad.add(idx)
                run.state["bad_samples"] += 1
        draws = run.recipe.draw(run)
        run.micro += 1
        features, prompts = run.recipe.features(run, batch, draws)
        empties += sum(p == "" for p in prompts)
        sync = m == accum - 1 or run.world == 1
        with contextlib.nullcontext() if sync else accelerator.no_sync(run.denoiser), accelerator.autocast():
            loss = run.recipe.loss(run, batch, draws, features)
        if not _all_true(accelerator, bool(torch.isfinite(loss.detach())), run.world):
            ok = False
            continue
        if ok:
            accelerator.backward(loss / accum)
        losses.append(loss.detach().float())
    return losses, empties, ok


def _union_types(run: _Run, batch: dict) -> torch.Tensor | None:
    """A union ControlNet's type index per sample of the batch; None for a plain ControlNet."""
    n = run.controlnet.config.get("num_control_type")
    if n is None:
        return None
    from controlnet.training.control_types import batch_types

    return batch_types(batch["control_type"], n).to(run.accelerator.device)


def _latent_shape(run: _Run) -> tuple[int, int, int]:
    side = run.config.resolution // run.base.vae_scale_factor
    return run.base.unet.config.in_channels, side, side


def _features(run: _Run, batch: dict, draws) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """(latents z = (mean + std * ε) * scale from the locked VAE, text embeddings, the prompts after dropping)."""
    base, device, cache = run.base, run.accelerator.device, run.cache
    images = batch["image"].to(device)
    prompts = drop_prompts(batch["prompt"], draws.drop_prompt)
    if cache is not None and not run.config.random_flip:
        mean, std = cache.posterior(batch["key"], images, lambda x: encode_images(base.vae, x))
        ehs = cache.text(prompts, lambda p: encode_sd(base.text_encoder, base.tokenizer, p)).to(device)
    else:
        mean, std = encode_images(base.vae, images)
        ehs = encode_sd(base.text_encoder, base.tokenizer, prompts)
    latents = (mean.float() + std.float() * draws.posterior.to(device)) * base.latent_scale
    return latents, ehs, prompts


def _reduce(run: _Run, losses: list[torch.Tensor], signals: _Signals) -> tuple[float, bool]:
    """One collective per step: (mean loss across processes, whether any process got a signal)."""
    mean_loss = torch.stack(losses).mean() if losses else torch.tensor(float("nan"))
    packed = torch.tensor([mean_loss.item(), float(signals.received is not None)], device=run.accelerator.device,
                          dtype=torch.float64)
    if run.world > 1:
        packed = run.accelerator.reduce(packed, reduction="sum")
        packed[0] /= run.world
    return packed[0].item(), packed[1].item() > 0


def _guard_divergence(run: _Run, ok: bool) -> None:
    """Count skipped (NaN/inf) steps in a row; too many stop the run with what to try."""
    if ok:
        run.consecutive_bad = 0
        return
    run.consecutive_bad += 1
    if run.main:
        warnings.warn(f"step {run.step}: loss or gradient is NaN/inf, step skipped "
                      f"({run.consecutive_bad} in a row)", stacklevel=1)
    if run.consecutive_bad >= run.config.max_bad_steps:
        raise TrainingDiverged(
            f"the loss was NaN/inf for {run.consecutive_bad} steps in a row (step {run.step}): try a lower "
            "--learning-rate, --mixed-precision bf16 instead of fp16 (fp16 overflows in SD's VAE and "
            "attention), a smaller --max-grad-norm, or check the data; resume from the last good "
            f"checkpoint with --resume latest ({run.out / 'checkpoints'})")


# ---------------------------------------------------------------- after each step: log, validate, checkpoint


def _log_step(run: _Run, entry: dict, result: TrainResult) -> None:
    """The step's line in train_log.jsonl; every `log_every` steps the progress bar and the tracker."""
    config, step = run.config, run.step
    result.log.append(entry)
    if not run.main:
        return
    _append_log_line(run.out / LOG, entry)
    if math.isfinite(entry["loss"]):
        run.ema = entry["loss"] if run.ema is None else 0.95 * run.ema + 0.05 * entry["loss"]
    run.bar.update(1)
    if step % config.log_every == 0 or step == config.max_steps:
        now = time.perf_counter()
        rate = run.samples_per_step * config.log_every / max(now - run.t_last, 1e-9)
        run.t_last = now
        run.bar.set_postfix(loss=f"{run.ema:.4f}" if run.ema is not None else "nan", samples_s=f"{rate:.1f}")
        if run.log_with:
            run.accelerator.log({"loss": entry["loss"], "lr": entry["lr"], "samples_per_s": rate,
                                 "empty_prompt_fraction": entry["empty_prompts"] / entry["batch"],
                                 "bad_samples": run.state["bad_samples"]}, step=step)


def _after_step(run: _Run, result: TrainResult, stop: bool, signals: _Signals) -> None:
    """Validation every `validate_every` steps; a checkpoint every `checkpoint_every`, at the last step and
    when stopped by a signal."""
    config, step = run.config, run.step
    if config.validate_every and config.validation_images and step % config.validate_every == 0:
        _validate(run)
    periodic = step % config.checkpoint_every == 0 or step == config.max_steps  # the end can be extended
    if periodic or stop:
        run.state["step"] = step
        result.checkpoint = _save(run)
    if stop:
        result.interrupted = int(signals.received or signal.SIGTERM)
        if run.main:
            print(f"\nstopped by signal {result.interrupted} at step {step}; resume with --resume latest",
                  file=sys.stderr)


def _end(run: _Run, result: TrainResult) -> TrainResult:
    """After the last step: the final validation and the outputs (not when stopped by a signal)."""
    config, step = run.config, run.step
    run.bar.close()
    result.step = step
    result.bad_samples = run.state["bad_samples"]
    if result.interrupted is None:
        if config.validation_images and (not config.validate_every or step % config.validate_every):
            _validate(run)
        _finish(run)
    result.fidelity = list(run.state["fidelity"])
    run.accelerator.wait_for_everyone()
    if run.log_with:
        run.accelerator.end_training()
    return result


# ---------------------------------------------------------------- helpers


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


def _log_lines(path: Path) -> list[str]:
    """The log's whole lines: one cut short (a full disk, a kill) is dropped."""
    lines = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            lines.append(line)
    return lines


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint we resume from (written by a run that was killed later)."""
    if path.is_file():
        write_text(path, "".join(ln + "\n" for ln in _log_lines(path) if json.loads(ln)["step"] <= step))


def _append_log_line(path: Path, entry: dict) -> None:
    """One line per step, appended. The log is the one file not replaced whole (that would rewrite it every
    step): appending never touches the lines before, and a line cut short is dropped by `_log_lines`."""
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")


def _save(run: _Run) -> Path | None:
    from accelerate.utils import gather_object

    accelerator, config = run.accelerator, run.config
    rngs = gather_object([ckpt.rng_state()]) if run.world > 1 else [ckpt.rng_state()]
    path = None
    if run.main:
        decoder = None
        if config.unlock_decoder:
            unet = accelerator.unwrap_model(run.denoiser).unet
            decoder = {n: p for n, p in unet.named_parameters() if p.requires_grad}
        state = dict(run.state, config=config.to_dict(), world=run.world)
        path = ckpt.save_checkpoint(run.out / "checkpoints", run.step, controlnet=run.controlnet,
                                    optimizer=run.optimizer, lr_scheduler=run.lr_scheduler, state=state,
                                    rng_states=rngs, decoder=decoder, scaler=accelerator.scaler,
                                    keep=config.keep_checkpoints)
    accelerator.wait_for_everyone()
    return path


def _resume(run: _Run, path: Path) -> dict:
    """Weights, optimizer, schedule, RNG and counters of checkpoint `path`; warns of changed settings."""
    from safetensors.torch import load_file

    config, accelerator = run.config, run.accelerator
    state = ckpt.read_state(path)
    saved = TrainConfig.from_dict(state.get("config", {}))
    _warn_of_changes(run, saved, state, path)
    weights = path / ckpt.WEIGHTS
    try:
        run.controlnet.load_state_dict(load_file(str(weights)), strict=True)
    except (OSError, RuntimeError) as exc:
        raise ckpt.CheckpointError(f"{weights} cannot be loaded into this ControlNet ({exc}); was the checkpoint made "
                                   "with a different base model or --copy/--hint-encoder?") from None
    decoder = ckpt.load_decoder(path)
    if decoder is not None and config.unlock_decoder:
        accelerator.unwrap_model(run.denoiser).unet.load_state_dict(decoder, strict=False)
    try:
        run.optimizer.load_state_dict(ckpt.load_tensors(path / "optimizer.pt"))
    except ValueError as exc:
        warnings.warn(f"optimizer state not restored ({exc}); it restarts from zero moments", stacklevel=2)
    run.lr_scheduler.load_state_dict(ckpt.load_tensors(path / "scheduler.pt"))
    if accelerator.scaler is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(ckpt.load_tensors(path / "scaler.pt"))
    rng = path / "rng" / f"rank-{run.rank}.pt"
    if rng.is_file():
        ckpt.set_rng_state(ckpt.load_tensors(rng))
    if run.main:
        print(f"resuming from {path} at step {state['step']}", file=sys.stderr)
    samples_per_step = saved.batch_size * state.get("world", 1) * saved.gradient_accumulation_steps
    state.setdefault("samples_seen", state["step"] * samples_per_step)
    state.setdefault("fidelity", [])
    state.setdefault("bad_samples", 0)
    return state


def _warn_of_changes(run: _Run, saved: TrainConfig, state: dict, path: Path) -> None:
    config = run.config
    changed = [k for k, v in saved.to_dict().items()
               if k not in TrainConfig.RESUMABLE_CHANGES and getattr(config, k) != v]
    if changed and run.main:
        warnings.warn(f"resuming {path} with changed settings {', '.join(changed)}: the run will not follow the "
                      "curve it would have followed", stacklevel=3)
    if saved.batch_size * state.get("world", 1) != config.batch_size * run.world:
        warnings.warn("the global batch (batch size x processes) differs from the checkpoint's: the data order "
                      "continues by samples seen, the loss curve will differ", stacklevel=3)


def _metric_name(config: TrainConfig) -> str | None:
    if not config.validation_annotator:
        return None
    from controlnet.metrics.fidelity import metric_for

    return metric_for(config.validation_annotator).name


def _validate(run: _Run) -> None:
    from controlnet.training.validation import plot_curves, run_validation

    config, accelerator, step = run.config, run.accelerator, run.step
    png = run.out / "validation" / f"step-{step:06d}.png"
    if run.main:
        scores = run_validation(
            run.controlnet, run.base, config.validation_images, config.validation_prompts,
            resolution=config.resolution, out_png=png, num_samples=config.num_validation_samples,
            steps=config.validation_steps, guidance_scale=config.guidance_scale, seed=config.seed,
            annotator=config.validation_annotator, only_mid_control=config.only_mid_control,
            inpaint_maps=config.inpaint_maps, sampler=run.recipe.sample)
        if scores:
            run.state["fidelity"].append({"step": step, **scores})
            if run.log_with:
                accelerator.log(scores, step=step)
            plot_curves([], run.state["fidelity"], run.out, _metric_name(config) or "fidelity")
        if run.log_with:
            _log_image(accelerator, png, step)
    accelerator.wait_for_everyone()


def _log_image(accelerator, png: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.writer.add_image("validation", np.asarray(Image.open(png)), step, dataformats="HWC")


def _finish(run: _Run) -> None:
    """The trained ControlNet in the diffusers layout (+ original on request), plots and a model card."""
    from controlnet.training.card import write_model_card
    from controlnet.training.validation import plot_curves

    config, out, state = run.config, run.out, run.state
    run.accelerator.wait_for_everyone()
    if not run.main:
        return
    run.recipe.save_model(run.controlnet, out)
    original = None
    if config.save_original:
        from controlnet.checkpoints import save_controlnet

        original = "controlnet-original.safetensors"
        save_controlnet(run.controlnet, out / original, layout="original")
    if config.unlock_decoder:
        ckpt.save_model_folder(run.base.unet, out / "unet")
    log = [json.loads(ln) for ln in _log_lines(out / LOG)]
    metric = _metric_name(config)
    plot_curves(log, state["fidelity"], out, metric or "fidelity")
    finite = [r["loss"] for r in log[-20:] if math.isfinite(r["loss"])]
    write_model_card(out, config=config, step=run.step, data_description=run.data_description,
                     fidelity=state["fidelity"], metric=metric,
                     final_loss=sum(finite) / len(finite) if finite else None,
                     bad_samples=state["bad_samples"], original_file=original)
