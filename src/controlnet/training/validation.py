"""Validation during training: a grid (condition | samples with prompt | samples without prompt), the
control-fidelity score, and PNG plots of the loss and fidelity curves.

Sampling is a plain DDIM loop over the models already in memory (no second pipeline is loaded: that
is where diffusers' and the original scripts run out of memory). The same seed every time, so
successive grids differ only by what the ControlNet learnt. Without a prompt both guidance branches
would be identical, so those samples use the conditional branch alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from controlnet.errors import InputError
from controlnet.files import save_figure, save_image
from controlnet.pipeline.text import encode_sd
from controlnet.training.data import _resize_crop, decode_map, hint_of


@torch.no_grad()
def sample(controlnet, base, prompts: list[str], hint: torch.Tensor, *, steps: int = 20, guidance_scale: float = 7.5,
           seed: int = 0, only_mid_control: bool = False) -> np.ndarray:
    """Images (N×H×W×3 uint8) for `prompts` under `hint` (N×3×H×W in [0, 1])."""
    from diffusers import DDIMScheduler

    from controlnet.nn import controlled_unet

    unet, vae = base.unet, base.vae
    device, dtype = unet.device, unet.dtype
    sched = DDIMScheduler.from_config(base.scheduler.config, clip_sample=False, set_alpha_to_one=False)
    sched.set_timesteps(steps, device=device)
    n = len(prompts)
    cond = encode_sd(base.text_encoder, base.tokenizer, prompts).to(dtype)
    guided = guidance_scale != 1.0 and any(prompts)  # classifier-free guidance
    if guided:
        uncond = encode_sd(base.text_encoder, base.tokenizer, [""] * n).to(dtype)
        ehs = torch.cat([uncond, cond])
    else:
        ehs = cond
    h, w = hint.shape[-2:]
    f = base.vae_scale_factor
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn((n, unet.config.in_channels, h // f, w // f), generator=g).to(device, dtype)
    latents = latents * sched.init_noise_sigma
    hint = hint.to(device)
    hint_emb = controlnet.embed_hint(hint)
    scales = None if not only_mid_control else [0.0] * (controlnet.num_connections - 1) + [1.0]
    for t in sched.timesteps:
        x = torch.cat([latents] * 2) if guided else latents
        x = sched.scale_model_input(x, t)
        res = controlnet(x.to(controlnet.dtype), t, ehs.to(controlnet.dtype), hint_embedding=hint_emb)
        eps = controlled_unet(unet, x, t, ehs, [(res, scales)])
        if guided:
            eu, ec = eps.chunk(2)
            eps = eu + guidance_scale * (ec - eu)
        latents = sched.step(eps, t, latents).prev_sample
    images = vae.decode(latents.to(vae.dtype) / base.latent_scale).sample
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def load_condition(path: str, resolution: int, inpaint_maps: bool = False) -> np.ndarray:
    """A validation condition map at the training resolution, as training reads its conditions."""
    return _resize_crop(decode_map(path, inpaint=inpaint_maps), resolution)


def check_condition_images(paths: list[str], resolution: int, inpaint_maps: bool = False) -> None:
    """Read every validation image before training starts: a bad one must not fail the run at its end."""
    for path in paths:
        if not Path(path).is_file():
            raise InputError(f"--validation-images {path}: no such file")
        try:
            load_condition(path, resolution, inpaint_maps)
        except Exception as exc:  # noqa: BLE001 - whatever the decoder says, name the file
            raise InputError(f"--validation-images {path}: not a readable image ({exc})") from None


def run_validation(controlnet, base, images: list[str], prompts: list[str], *, resolution: int, out_png: Path,
                   num_samples: int = 2, steps: int = 20, guidance_scale: float = 7.5, seed: int = 0,
                   annotator: str | None = None, only_mid_control: bool = False, inpaint_maps: bool = False,
                   sampler=sample) -> dict:
    """Write the grid to `out_png`; return {"fidelity_prompt", "fidelity_empty"} when an annotator is set.
    `sampler`: `sample`'s signature; transformer bases pass theirs (`controlnet.training.dit`)."""
    was_training = controlnet.training
    controlnet.eval()
    rows, scores = [], {"prompt": [], "empty": []}
    try:
        for i, path in enumerate(images):
            prompt = prompts[i] if len(prompts) > 1 else (prompts[0] if prompts else "")
            cond = load_condition(path, resolution, inpaint_maps)
            hint = hint_of(cond)[None].repeat(num_samples, 1, 1, 1)
            cond = (hint[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # masked: black
            with_prompt = sampler(controlnet, base, [prompt] * num_samples, hint, steps=steps,
                                  guidance_scale=guidance_scale, seed=seed + i, only_mid_control=only_mid_control)
            without = sampler(controlnet, base, [""] * num_samples, hint, steps=steps, guidance_scale=guidance_scale,
                              seed=seed + i, only_mid_control=only_mid_control)
            rows.append(np.concatenate([cond, *with_prompt, *without], axis=1))
            if annotator:
                from controlnet.metrics.fidelity import control_fidelity

                scores["prompt"] += [control_fidelity(annotator, im, cond) for im in with_prompt]
                scores["empty"] += [control_fidelity(annotator, im, cond) for im in without]
    finally:
        controlnet.train(was_training)
    save_image(np.concatenate(rows, axis=0), out_png)
    if not annotator:
        return {}
    return {"fidelity_prompt": float(np.mean(scores["prompt"])), "fidelity_empty": float(np.mean(scores["empty"]))}


def plot_curves(log: list[dict], fidelity: list[dict], out_dir: Path, metric_name: str = "fidelity") -> list[Path]:
    """loss.png (raw and smoothed) and, with validation scores, fidelity.png. Plots are optional: without
    matplotlib (not in the base install) they are skipped with one line saying so."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("controlnet train: no plots written; install matplotlib for loss.png", file=sys.stderr)
        return []
    written = []
    if log:
        steps = np.array([r["step"] for r in log])
        loss = np.array([r["loss"] for r in log], dtype=float)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, loss, lw=0.5, alpha=0.4, label="loss")
        k = max(1, len(loss) // 50)
        if k > 1:
            ax.plot(steps[k - 1:], np.convolve(loss, np.ones(k) / k, mode="valid"), lw=1.5, label=f"mean of {k}")
        ax.set_xlabel("step")
        ax.set_ylabel("diffusion loss")
        written.append(_save_figure(fig, ax, out_dir / "loss.png"))
    if fidelity:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        steps = [r["step"] for r in fidelity]
        ax.plot(steps, [r["fidelity_prompt"] for r in fidelity], "o-", label="with prompt")
        ax.plot(steps, [r["fidelity_empty"] for r in fidelity], "s-", label="without prompt")
        ax.set_xlabel("step")
        ax.set_ylabel(metric_name)
        ax.set_title("control fidelity (condition re-extracted from samples)")
        written.append(_save_figure(fig, ax, out_dir / "fidelity.png"))
    return written


def _save_figure(fig, ax, path: Path) -> Path:
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
