"""`controlnet train`: teach a locked Stable Diffusion a new condition (paper §3.3).

One flag per `TrainConfig` field; this module only parses: `train` checks every value before step 1,
and `controlnet.cli` turns its errors into one line. Works as is on one CPU or GPU, and under `accelerate launch` for
several processes (DDP), e.g. `accelerate launch --num_processes 2 -m controlnet train ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlnet.training.config import TrainConfig

HELP = {
    "base_model": "local diffusers folder of the base model (model_index.json, unet/ or transformer/ of SD3/Flux, vae/, "
                  "text_encoder/, ...)",
    "data": "training data: fill50k folder (prompt.json), image folder (metadata.jsonl), datasets folder, "
            "*.parquet or *.tar WebDataset shards (several allowed)",
    "data_format": "data layout; auto detects it from the files",
    "image_column": "column (or WebDataset key) of the target image",
    "conditioning_image_column": "column (or WebDataset key) of the condition image",
    "inpaint_maps": "the condition images are inpaint maps (RGBA, alpha 255 = repaint, as the inpaint annotator "
                    "writes them): the hint is -1 there (control_v11p_sd15_inpaint); otherwise alpha is transparency",
    "caption_column": "column (or WebDataset key) of the prompt",
    "annotator": "compute missing conditions from the targets with this annotator (e.g. canny)",
    "resolution": "training resolution (shorter side resized, centre crop)",
    "random_flip": "flip pairs horizontally at random (disables the latent cache)",
    "max_train_samples": "use only the first N samples",
    "controlnet": "start from this ControlNet (any layout) instead of a copy of the U-Net",
    "union": "train a union ControlNet (one network, several condition kinds): each sample's type comes from "
             "the data's control_type column (canny, depth, seg, ...); implied by a union --controlnet",
    "learning_rate": "AdamW learning rate of the ControlNet (paper: 1e-5)",
    "empty_prompt_prob": "fraction of prompts replaced by the empty string (paper: 0.5)",
    "prediction_type": "epsilon or v_prediction; default: the base model's scheduler config",
    "unlock_decoder": "also train the U-Net decoder (original sd_locked=False; can harm the base model)",
    "decoder_learning_rate": "learning rate of the unlocked decoder",
    "only_mid_control": "use only the middle-block connection (original only_mid_control)",
    "connection_init": "zero (paper) or gaussian (§4.2 ablation)",
    "copy": "full (paper) or lite (ControlNet-lite ablation)",
    "hint_encoder": "code (released checkpoints) or paper (the text's 4x4 encoder)",
    "num_layers": "SD3/Flux bases: transformer blocks copied into the ControlNet (Flux: double blocks); "
                  "default 12 (SD3) or 4 (Flux), at most the base's",
    "num_single_layers": "Flux bases: single blocks copied; default 10, at most the base's",
    "weighting_scheme": "SD3/Flux bases: how the noise level σ is drawn (sigma_sqrt and cosmap weigh the SD3 loss instead)",
    "max_sequence_length": "SD3/Flux bases: T5 tokens per prompt; default 77 (SD3) or 512 (Flux)",
    "embedded_guidance": "Flux bases with guidance embedding (dev): the guidance value they see in training and validation",
    "controlnet_layout": "Flux bases: instantx (the hint's VAE latent, zero input projection) or xlabs (the hint as "
                         "pixels through a hint encoder, outputs added cyclically); default instantx, or --controlnet's",
    "batch_size": "samples per process per micro-batch",
    "gradient_accumulation_steps": "micro-batches per optimizer step",
    "max_steps": "optimizer steps to train for",
    "max_grad_norm": "gradient clipping norm",
    "lr_scheduler": "learning-rate schedule",
    "lr_warmup_steps": "warm-up steps of the schedule",
    "use_8bit_adam": "bitsandbytes 8-bit AdamW (CUDA; saves optimizer memory)",
    "seed": "seed of the data order, noise, time steps and prompt dropping",
    "mixed_precision": "no, fp16 or bf16 (ControlNet master weights stay fp32)",
    "gradient_checkpointing": "recompute ControlNet and U-Net decoder activations in the backward pass",
    "split_unet": "run the locked U-Net encoder without autograd (--no-split-unet: diffusers' full forward)",
    "cache_dir": "cache VAE latents and text embeddings here (keyed by content and model hash)",
    "num_workers": "data loader worker processes",
    "allow_tf32": "allow TF32 matmuls on Ampere+ GPUs",
    "output_dir": "where the ControlNet, checkpoints, logs and validation grids go",
    "checkpoint_every": "save a resumable checkpoint every N steps",
    "keep_checkpoints": "keep the newest N checkpoints",
    "resume": "'latest' or a checkpoint folder to continue from",
    "max_bad_steps": "abort after N NaN/inf losses in a row",
    "log_every": "update the progress bar and TensorBoard every N steps",
    "report_to": "tensorboard or none",
    "validate_every": "validation grid and fidelity score every N steps (0: only at the end)",
    "validation_images": "condition images for validation",
    "validation_prompts": "one prompt, or one per validation image",
    "validation_annotator": "re-extract the condition from samples with this annotator for the fidelity score",
    "num_validation_samples": "samples per validation image, with and without prompt",
    "validation_steps": "DDIM steps of validation sampling",
    "guidance_scale": "classifier-free guidance of validation samples with a prompt",
    "save_original": "also save the original (lllyasviel) single-file layout",
    "progress": "show the progress bar",
}


def register(subparsers) -> argparse.ArgumentParser:
    from controlnet.training.config import (
        CONTROLNET_LAYOUTS,
        DATA_FORMATS,
        LR_SCHEDULERS,
        MIXED_PRECISION,
        WEIGHTING_SCHEMES,
        TrainConfig,
    )

    p = subparsers.add_parser("train", help="train a ControlNet on pairs (target, condition, prompt)",
                              description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    choices = {"data_format": DATA_FORMATS, "mixed_precision": MIXED_PRECISION, "lr_scheduler": LR_SCHEDULERS,
               "prediction_type": ("epsilon", "v_prediction"), "connection_init": ("zero", "gaussian"),
               "copy": ("full", "lite"), "hint_encoder": ("code", "paper"), "report_to": ("tensorboard", "none"),
               "weighting_scheme": WEIGHTING_SCHEMES, "controlnet_layout": CONTROLNET_LAYOUTS}
    required = {"base_model", "data"}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        kw = dict(help=HELP.get(f.name, f.name.replace("_", " ")), dest=f.name)
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, **kw)
            continue
        if isinstance(default, list):
            kw.update(nargs="+", default=default, required=f.name in required)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).replace(" | None", ""), str)
            kw.update(type=kind, default=default, required=f.name in required)
        if f.name in choices:
            kw["choices"] = choices[f.name]
        p.add_argument(flag, **kw)
    # "-1e-4" is a value, not an option (argparse only knows "-1" and "-0.5"), so the range check can name it
    p._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
    p.set_defaults(func=run)
    return p


def config_from_args(args) -> TrainConfig:
    from controlnet.training.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in names})


def run(args) -> int:
    from controlnet.training import train

    result = train(config_from_args(args))
    if result.interrupted:
        return 128 + int(result.interrupted)
    print(f"trained {result.step} steps; ControlNet saved in {result.output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m controlnet.cli.train ...` (the same as `controlnet train ...`, with the same error handling)."""
    from controlnet.cli import main as controlnet_main

    return controlnet_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
