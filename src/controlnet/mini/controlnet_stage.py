"""Stage 3 of the miniature recipe: one ControlNet per condition, trained by `controlnet train`.

The same trainer users run, on the world's pairs exported in the image-folder layout; only the
settings suit a model trained from scratch at 64 px (a larger learning rate and batch than the
paper's 1e-5 × 4 for SD). To fit a time budget, a short calibration run measures the step time,
and the run then resumes from its checkpoint up to the step count the budget allows.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from controlnet.files import write_json

# the annotator that re-extracts each condition from samples for the fidelity curve
FIDELITY_ANNOTATOR = {"edges": "canny", "seg": None, "depth": None, "inpaint": None}


def train_controlnet(model: Path, work: Path, condition: str, budget_s: float, *, samples: int = 8000,
                     batch_size: int = 32, learning_rate: float = 2e-4, max_steps: int = 40_000,
                     calibration_steps: int = 20, world_seed: int = 0, size: int = 64, progress: bool = True) -> dict:
    """Train `model`'s ControlNet for `condition` in about `budget_s` seconds; saved as
    `model/controlnet-<condition>` (fp16). Resumable: rerun with the same arguments."""
    from controlnet.training import TrainConfig, train

    t0 = time.perf_counter()
    common = _train_settings(model, work, condition, samples, world_seed, size, progress,
                             batch_size=batch_size, learning_rate=learning_rate)
    done = work / "run" / "diffusion_pytorch_model.safetensors"
    report_file = work / "report.json"
    target = model / f"controlnet-{condition}"
    if report_file.is_file() and done.is_file():
        if not (target / "config.json").is_file():  # the model folder was written again since
            _install(work / "run", target)
        return json.loads(report_file.read_text())
    calibration_steps = min(calibration_steps, max_steps - 1) if max_steps > 1 else 1
    if (work / "run" / "checkpoints").is_dir():
        steps = json.loads((work / "plan.json").read_text())["steps"]
    else:
        calibration = train(TrainConfig(**common, max_steps=calibration_steps, validate_every=0))
        rates = sorted(e["samples_per_s"] for e in calibration.log[1:])  # the first step warms up
        step_s = batch_size / rates[len(rates) // 2]
        spent = time.perf_counter() - t0
        # 85%: the rest goes to start-up, the four validation rounds and saving
        steps = max(calibration_steps + 1, int(calibration_steps + 0.85 * (budget_s - spent) / step_s))
        steps = min(steps, max(max_steps, calibration_steps + 1))
    write_json(work / "plan.json", {"steps": steps})
    result = train(TrainConfig(**common, max_steps=steps, resume="latest", validate_every=max(steps // 4, 1)))
    if result.interrupted:  # checkpointed, not finished: neither installed nor reported as done
        raise KeyboardInterrupt(f"controlnet-{condition} stopped at step {result.step} of {steps}; rerun to resume")
    _install(work / "run", target)
    report = {"condition": condition, "steps": result.step, "wall_s": round(time.perf_counter() - t0, 1),
              "final_loss": result.log[-1]["loss"] if result.log else None, "fidelity": result.fidelity,
              "path": str(target)}
    write_json(report_file, report)
    return report


def _train_settings(model: Path, work: Path, condition: str, samples: int, world_seed: int, size: int,
                    progress: bool, **optimizer) -> dict:
    """Export the training and validation pairs (once; an interrupted export resumes) and return
    the TrainConfig settings shared by the calibration and the full run."""
    from controlnet.world.export import export

    data, validation = work / "data", work / "validation"
    if not (data / "metadata.jsonl").is_file():
        export(data, samples, layout="imagefolder", condition=condition, seed=world_seed, size=size, progress=progress)
    if not (validation / "metadata.jsonl").is_file():
        export(validation, 4, layout="imagefolder", condition=condition, seed=world_seed + 1, size=size, progress=False)
    val_rows = [line for line in (validation / "metadata.jsonl").read_text().splitlines() if line.strip()]
    val = [json.loads(r) for r in val_rows]
    return dict(
        base_model=str(model), data=[str(data)], output_dir=str(work / "run"), resolution=size, **optimizer,
        empty_prompt_prob=0.5, cache_dir=str(work / "cache"), checkpoint_every=500,
        keep_checkpoints=1, report_to="none", progress=progress, seed=world_seed, log_every=50,
        validation_images=[str(validation / v["conditioning_image"]) for v in val],
        validation_prompts=[v["text"] for v in val], validation_annotator=FIDELITY_ANNOTATOR[condition],
        num_validation_samples=1, validation_steps=20, guidance_scale=5.0,
        inpaint_maps=condition == "inpaint",  # RGBA maps: alpha 255 = repaint, -1 in the hint
    )


def _install(run: Path, target: Path) -> None:
    """The trained ControlNet into the model folder, fp16 (half the bytes), replacing any older one,
    with the built-in one's recommended sampling settings (the recipe's sweep chose them)."""
    import torch

    from controlnet.assets import MINI_DIR
    from controlnet.checkpoints import load_controlnet, save_controlnet
    from controlnet.recommended import FILE

    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_controlnet(load_controlnet(run), tmp, dtype=torch.float16)
    shipped = MINI_DIR / target.name / FILE
    if shipped.is_file():
        shutil.copyfile(shipped, tmp / FILE)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
