"""Everything a training run needs to know, with the paper's recipe as defaults (PAPER.md §3).

One flat dataclass: the CLI mirrors its fields one to one, checkpoints store it as JSON, and a
resumed run checks that nothing which changes the loss curve was altered.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from controlnet.errors import InputError

DATA_FORMATS = ("auto", "fill50k", "folder", "hf", "parquet", "webdataset")
MIXED_PRECISION = ("no", "fp16", "bf16")
LR_SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


@dataclass
class TrainConfig:
    # ---- what to train on
    base_model: str = ""  # local diffusers folder with model_index.json
    data: list[str] = field(default_factory=list)  # folder, prompt.json, dataset dir, *.parquet, *.tar
    data_format: str = "auto"
    image_column: str = "image"
    conditioning_image_column: str = "conditioning_image"
    caption_column: str = "text"
    annotator: str | None = None  # compute a missing condition from the target with this annotator
    resolution: int = 512
    random_flip: bool = False  # augmentation; turns the latent cache off
    max_train_samples: int | None = None
    controlnet: str | None = None  # start from an existing ControlNet instead of copying the U-Net

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

    def validate(self) -> TrainConfig:
        """Fail before any model is loaded, with the option to fix named."""
        def bad(msg):
            raise InputError(msg)

        if not self.base_model:
            bad("no base model: pass --base-model PATH (a local diffusers folder with model_index.json)")
        if not self.data:
            bad("no training data: pass --data PATH (a fill50k folder, an image folder with metadata.jsonl, "
                "a datasets folder, parquet files or .tar shards)")
        if self.data_format not in DATA_FORMATS:
            bad(f"--data-format must be one of {', '.join(DATA_FORMATS)}, got {self.data_format!r}")
        if self.mixed_precision not in MIXED_PRECISION:
            bad(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, got {self.mixed_precision!r}")
        if self.lr_scheduler not in LR_SCHEDULERS:
            bad(f"--lr-scheduler must be one of {', '.join(LR_SCHEDULERS)}, got {self.lr_scheduler!r}")
        if not 0.0 <= self.empty_prompt_prob <= 1.0:
            bad(f"--empty-prompt-prob must be in [0, 1], got {self.empty_prompt_prob}")
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            bad(f"--prediction-type must be epsilon or v_prediction, got {self.prediction_type!r}")
        for name in ("batch_size", "gradient_accumulation_steps", "max_steps", "keep_checkpoints", "max_bad_steps"):
            if getattr(self, name) < 1:
                bad(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.resolution % 8:
            bad(f"--resolution must be a multiple of 8, got {self.resolution}")
        if len(self.validation_prompts) not in (0, 1, len(self.validation_images)):
            bad("give one --validation-prompt, or one per --validation-image")
        if self.connection_init not in ("zero", "gaussian"):
            bad(f"--connection-init must be zero or gaussian, got {self.connection_init!r}")
        if self.copy not in ("full", "lite"):
            bad(f"--copy must be full or lite, got {self.copy!r}")
        if self.hint_encoder not in ("code", "paper"):
            bad(f"--hint-encoder must be code or paper, got {self.hint_encoder!r}")
        return self

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
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
