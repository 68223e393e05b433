"""Everything a training run needs to know, with the paper's recipe as defaults (PAPER.md §3).

One flat dataclass: the CLI mirrors its fields one to one, checkpoints store it as JSON, and a
resumed run checks that nothing which changes the loss curve was altered.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from controlnet import checks
from controlnet.errors import InputError
from controlnet.files import write_json

DATA_FORMATS = ("auto", "fill50k", "folder", "hf", "parquet", "webdataset")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
WEIGHTING_SCHEMES = ("none", "logit_normal", "mode", "sigma_sqrt", "cosmap")  # flow_matching's, without importing torch
CONTROLNET_LAYOUTS = ("instantx", "xlabs")  # Flux ControlNets the trainer builds: control latent or pixel hint


@dataclass
class TrainConfig:
    # ---- what to train on
    base_model: str = ""  # local diffusers folder with model_index.json, or "mini" (built in)
    data: list[str] = field(default_factory=list)  # (one path alone is a list of one) folder, prompt.json, dataset dir, *.parquet, *.tar
    data_format: str = "auto"
    image_column: str = "image"
    conditioning_image_column: str = "conditioning_image"
    caption_column: str = "text"
    annotator: str | None = None  # compute a missing condition from the target with this annotator
    inpaint_maps: bool = False  # conditions are inpaint maps (RGBA, alpha 255 = repaint -> -1 in the hint)
    resolution: int = 512
    random_flip: bool = False  # augmentation; turns the latent cache off
    max_train_samples: int | None = None
    controlnet: str | None = None  # start from an existing ControlNet instead of copying the U-Net
    union: bool = False  # a union ControlNet: a control_type per sample (implied by a union --controlnet)

    # ---- the paper's recipe (§3.3) and the original code's options
    learning_rate: float = 1e-5
    empty_prompt_prob: float = 0.5
    prediction_type: str | None = None  # None: the base model's scheduler config (epsilon / v_prediction)
    unlock_decoder: bool = False  # original `sd_locked=False`: also train the U-Net decoder
    decoder_learning_rate: float = 2e-6
    only_mid_control: bool = False
    connection_init: str = "zero"  # "gaussian": the §4.2 ablation
    copy: str = "full"  # "lite": ControlNet-lite ablation
    hint_encoder: str = "code"  # "paper": the text's 4x4 encoder

    # ---- transformer bases (SD3/SD3.5, Flux): diffusers' train_controlnet_sd3/flux.py options
    num_layers: int | None = None  # blocks copied (Flux: double blocks); None: 12 (SD3) / 4 (Flux), at most the base's
    num_single_layers: int | None = None  # Flux single blocks copied; None: 10, at most the base's
    weighting_scheme: str = "logit_normal"  # how σ is drawn (and, sigma_sqrt/cosmap, the SD3 loss weighted)
    max_sequence_length: int | None = None  # T5 tokens; None: 77 (SD3) / 512 (Flux), as the examples
    embedded_guidance: float = 3.5  # what a guidance-distilled Flux base (dev) sees in training and validation
    controlnet_layout: str | None = None  # Flux: "instantx" (control latent; the default) or "xlabs" (pixel hint encoder)

    # ---- optimisation
    batch_size: int = 4  # per process
    gradient_accumulation_steps: int = 1
    max_steps: int = 10_000
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_weight_decay: float = 1e-2
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    use_8bit_adam: bool = False
    seed: int = 0

    # ---- efficiency
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False  # the ControlNet and the locked U-Net's decoder
    split_unet: bool = True  # locked encoder under no_grad, decoder with grad
    cache_dir: str | None = None  # on-disk cache of VAE latents and text embeddings
    num_workers: int = 0
    allow_tf32: bool = False

    # ---- never lose work
    output_dir: str = "controlnet-out"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    resume: str | None = None  # "latest" or a checkpoint folder
    max_bad_steps: int = 10  # abort after this many non-finite losses in a row

    # ---- see it learn
    log_every: int = 10
    report_to: str = "tensorboard"  # or "none"
    validate_every: int = 0  # 0: only at the end (when validation images are given)
    validation_images: list[str] = field(default_factory=list)
    validation_prompts: list[str] = field(default_factory=list)
    validation_annotator: str | None = None  # re-extract the condition for the fidelity score
    num_validation_samples: int = 2
    validation_steps: int = 20
    guidance_scale: float = 7.5

    # ---- outputs
    save_original: bool = False  # also write the original (lllyasviel) single-file layout
    progress: bool = True

    def __post_init__(self):
        """A single path or prompt is a list of one (a string would be iterated character by character);
        paths are kept as strings so the config saves as JSON."""
        for name in ("data", "validation_images", "validation_prompts"):
            value = getattr(self, name)
            if isinstance(value, (str, os.PathLike)):
                value = [value]
            if isinstance(value, (list, tuple)):
                setattr(self, name, [os.fspath(v) if isinstance(v, os.PathLike) else v for v in value])
        for name in ("base_model", "output_dir", "controlnet", "cache_dir", "resume"):
            if isinstance(getattr(self, name), os.PathLike):
                setattr(self, name, os.fspath(getattr(self, name)))

    def validate(self) -> TrainConfig:
        """Check every value before any model is loaded; the message names the option to fix."""
        self._check_inputs()
        self._check_numbers()
        self._check_choices()
        self._check_pairs()
        return self

    def _check_pairs(self) -> None:
        """Options that act only with another are refused alone rather than ignored."""
        given = [_flag(n) for n in ("validation_prompts", "validation_annotator") if getattr(self, n)]
        if self.union and self.validation_images:
            raise InputError("--validation-images: validation sampling of a union ControlNet is not supported yet "
                             "(it needs a control type per image); leave them out and score it with `controlnet evaluate`")
        if given and not self.validation_images:
            raise InputError(f"{' and '.join(given)} do nothing without --validation-images (the condition images to "
                             "sample from); give them or leave the option out")

    def _check_inputs(self) -> None:
        if not self.base_model or not isinstance(self.base_model, str):
            raise InputError("no base model: pass --base-model PATH (a local diffusers folder with model_index.json, "
                             "or 'mini' for the built-in miniature model)")
        if not self.data:
            raise InputError("no training data: pass --data PATH (a fill50k folder, an image folder with metadata.jsonl, "
                             "a datasets folder, parquet files or .tar shards)")
        for name in ("data", "validation_images", "validation_prompts"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InputError(f"{name} must be a list of strings (or one string), got {value!r}")
        if any(not v.strip() for v in self.data + self.validation_images):
            raise InputError("an empty path in --data or --validation-images")
        if len(self.validation_prompts) not in (0, 1, len(self.validation_images)):
            raise InputError(f"give one --validation-prompts, or one per --validation-images "
                             f"({len(self.validation_images)}); got {len(self.validation_prompts)}")
        if not self.output_dir or not isinstance(self.output_dir, str):
            raise InputError("no output folder: pass --output-dir PATH")
        from controlnet.files import outside_inputs
        from controlnet.pipeline.prompts import check_prompt

        outside_inputs(self.output_dir, "--output-dir", {f"--data {d}": d for d in self.data})
        for prompt in self.validation_prompts:  # sampled at the end of the run: refuse a bad one now
            check_prompt(prompt, "--validation-prompts")

    def _check_numbers(self) -> None:
        for name in ("learning_rate", "decoder_learning_rate", "adam_epsilon", "max_grad_norm"):
            checks.number(_flag(name), getattr(self, name), lo=0, lo_open=True)
        checks.number("--empty-prompt-prob", self.empty_prompt_prob, lo=0, hi=1)
        for name in ("adam_beta1", "adam_beta2"):
            checks.number(_flag(name), getattr(self, name), lo=0, hi=1, hi_open=True)
        checks.number("--adam-weight-decay", self.adam_weight_decay, lo=0)
        checks.number("--guidance-scale", self.guidance_scale, lo=0, hi=checks.MAX_GUIDANCE)
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "keep_checkpoints", "max_bad_steps",
                     "checkpoint_every", "log_every", "num_validation_samples", "validation_steps"):
            checks.positive_int(_flag(name), getattr(self, name))
        for name in ("validate_every", "lr_warmup_steps", "num_workers", "seed"):
            checks.integer(_flag(name), getattr(self, name), lo=0)
        if self.max_train_samples is not None:
            checks.positive_int("--max-train-samples", self.max_train_samples)
        if self.num_layers is not None:
            checks.positive_int("--num-layers", self.num_layers)
        if self.num_single_layers is not None:
            checks.integer("--num-single-layers", self.num_single_layers, lo=0)
        if self.max_sequence_length is not None:
            checks.integer("--max-sequence-length", self.max_sequence_length, lo=1, hi=512)
        checks.number("--embedded-guidance", self.embedded_guidance, lo=0, hi=checks.MAX_GUIDANCE)
        checks.integer("--resolution", self.resolution, lo=8)
        if self.resolution % 8:
            raise InputError(f"--resolution must be a multiple of 8, got {self.resolution}")

    def _check_choices(self) -> None:
        checks.choice("--data-format", self.data_format, DATA_FORMATS)
        checks.choice("--mixed-precision", self.mixed_precision, MIXED_PRECISION)
        checks.choice("--lr-scheduler", self.lr_scheduler, LR_SCHEDULERS)
        checks.choice("--prediction-type", self.prediction_type, (None, "epsilon", "v_prediction"))
        checks.choice("--connection-init", self.connection_init, ("zero", "gaussian"))
        checks.choice("--copy", self.copy, ("full", "lite"))
        checks.choice("--hint-encoder", self.hint_encoder, ("code", "paper"))
        checks.choice("--report-to", self.report_to, ("tensorboard", "none"))
        checks.choice("--weighting-scheme", self.weighting_scheme, WEIGHTING_SCHEMES)
        if self.controlnet_layout is not None:
            checks.choice("--controlnet-layout", self.controlnet_layout, CONTROLNET_LAYOUTS)
        for name in ("annotator", "validation_annotator"):
            if getattr(self, name) is not None:
                from controlnet.annotators import get_annotator

                try:
                    get_annotator(getattr(self, name))
                except InputError as exc:
                    raise InputError(f"{_flag(name)}: {exc}") from None

    # Fields that may change between a checkpoint and its resumption without changing the run.
    RESUMABLE_CHANGES = frozenset({
        "max_steps", "output_dir", "resume", "checkpoint_every", "keep_checkpoints", "log_every", "report_to",
        "validate_every", "validation_images", "validation_prompts", "validation_annotator",
        "num_validation_samples", "validation_steps", "guidance_scale", "save_original", "progress",
        "num_workers", "cache_dir", "max_bad_steps", "data", "base_model", "controlnet", "batch_size",
        "only_mid_control", "unlock_decoder",
    })

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")
