"""A small model card (README.md next to the weights): what was trained, on what, how far, how well."""

from __future__ import annotations

from pathlib import Path

from controlnet.files import write_text


def write_model_card(out_dir: Path, *, config, step: int, data_description: str, fidelity: list[dict],
                     metric: str | None, final_loss: float | None, bad_samples: int,
                     original_file: str | None = None) -> Path:
    lines = [
        "---",
        "library_name: controlnet-pytorch",
        "tags: [controlnet, stable-diffusion, diffusers]",
        "---",
        "",
        f"# ControlNet trained on {data_description}",
        "",
        f"- base model: `{config.base_model}`",
        f"- data: {data_description}; {bad_samples} unusable samples skipped",
        f"- steps: {step} (batch {config.batch_size} per process x {config.gradient_accumulation_steps} accumulation)",
        f"- learning rate: {config.learning_rate} ({config.lr_scheduler}), empty prompts: {config.empty_prompt_prob:.0%}",
        f"- resolution: {config.resolution}, mixed precision: {config.mixed_precision}",
    ]
    if config.unlock_decoder:
        lines.append(f"- U-Net decoder unlocked (lr {config.decoder_learning_rate}); the trained U-Net is in `unet/`")
    if config.only_mid_control:
        lines.append("- only the middle-block connection is used (`only_mid_control`)")
    if config.connection_init != "zero" or config.copy != "full" or config.hint_encoder != "code":
        lines.append(f"- ablation: connection_init={config.connection_init}, copy={config.copy}, "
                     f"hint_encoder={config.hint_encoder}")
    if final_loss is not None:
        lines.append(f"- final training loss: {final_loss:.4f}")
    lines += ["", "## Files", "", "- `config.json`, `diffusion_pytorch_model.safetensors`: diffusers layout "
              "(`controlnet.checkpoints.load_controlnet(path)` or diffusers' `ControlNetModel.from_pretrained`)"]
    if original_file:
        lines.append(f"- `{original_file}`: original (lllyasviel) layout, for A1111 / ComfyUI")
    if fidelity:
        lines += ["", f"## Control fidelity ({metric}, condition re-extracted from validation samples)", "",
                  "| step | with prompt | without prompt |", "|---:|---:|---:|"]
        lines += [f"| {r['step']} | {r['fidelity_prompt']:.3f} | {r['fidelity_empty']:.3f} |" for r in fidelity]
        if (out_dir / "fidelity.png").is_file():
            lines += ["", "![fidelity](fidelity.png)"]
    if (out_dir / "loss.png").is_file():
        lines += ["", "![loss](loss.png)"]
    path = out_dir / "README.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
