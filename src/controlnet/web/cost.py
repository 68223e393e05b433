"""Admission by estimated cost: a request that would hold the one worker longer than
`--max-job-seconds`, or whose prompt is absurdly long, is refused with 422 before it is queued.

The cost of one U-Net forward of one image at P latent pixels is measured at startup
(`measure`: one timed step at three small sizes, fitted as c + a·P + b·P², the P² term being
attention; beyond the largest timed size it is taken to grow as P²); a request costs that times its network forwards (steps × (1 + units), × 2 under CFG,
plus one for the VAE) × its images. `estimate_seconds` is the one place this is computed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from controlnet.web.inputs import FieldError

MEASURED_SIDES = (16, 32, 64)  # latent pixels per side: 64 (512 px for SD) shows the attention term
CHARS_PER_TOKEN = 16  # more characters than this per allowed token: refused without tokenizing


@dataclass(frozen=True)
class StepCost:
    """Seconds of one network forward of one image at P latent pixels: c + a·P + b·P² up to the
    largest timed size `timed`; beyond it, growing with P² from there (attention comes to dominate,
    and a fit to small sizes cannot tell how much: this errs high, never low)."""

    c: float = 0.0
    a: float = 0.0
    b: float = 0.0
    timed: float = float("inf")

    def seconds(self, latent_pixels: int) -> float:
        p = min(latent_pixels, self.timed)
        return (self.c + self.a * p + self.b * p**2) * (latent_pixels / p) ** 2


def fit(pixels: list[int], seconds: list[float]) -> StepCost:
    """c + a·P + b·P² through the timings by least squares, dropping b (then c) when timing noise
    makes a coefficient negative; a·P alone always fits with a >= 0."""
    p, t = np.asarray(pixels, float), np.asarray(seconds, float)
    columns = {"c": np.ones_like(p), "a": p, "b": p**2}
    for names in (("c", "a", "b"), ("c", "a"), ("a",)):
        coef = np.linalg.lstsq(np.stack([columns[n] for n in names], axis=1), t, rcond=None)[0]
        if (coef >= 0).all():
            break
    return StepCost(**{n: float(v) for n, v in zip(names, coef)}, timed=float(p.max()))


def measure(pipe) -> StepCost:
    """One timed sampling step (no CFG, no ControlNet, no decode) at each of MEASURED_SIDES, best of
    two. An inpainting base (9 input channels) is timed inpainting, the only way it samples."""
    from controlnet.pipeline.inpaint import nine_channel

    f = pipe.vae_scale_factor
    pixels, seconds = [], []
    for side in MEASURED_SIDES:
        size = side * f
        extra = {}
        if nine_channel(pipe.unet, pipe.vae):
            white = np.full((size, size, 3), 255, np.uint8)
            extra = {"init_image": white, "mask_image": white}
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            pipe("", [], steps=1, guidance_scale=1.0, seed=0, width=size, height=size, output_type="latent",
                 progress=False, **extra).images.cpu()  # .cpu(): waits for an accelerator's queued work
            best = min(best, time.perf_counter() - start)
        pixels.append(side * side)
        seconds.append(best)
    return fit(pixels, seconds)


def forwards_per_image(req) -> int:
    """Network forwards one image of `req` costs: each step runs the U-Net and every unit's
    ControlNet (twice under CFG), and the VAE runs once."""
    guided = 2 if req.cfg > 1.0 else 1
    return req.steps_run * guided * (1 + len(req.units)) + 1


def estimate_seconds(req, cost: StepCost, vae_scale_factor: int) -> float:
    """How long `req` (a GenerationRequest) would hold the worker, by the measured cost."""
    latent_pixels = (req.width // vae_scale_factor) * (req.height // vae_scale_factor)
    return cost.seconds(latent_pixels) * forwards_per_image(req) * req.batch_size * req.n_iter


def check_time(req, cost: StepCost, vae_scale_factor: int, max_seconds: float) -> None:
    """422 naming the fields that set the cost when `req` would run longer than `max_seconds`."""
    seconds = estimate_seconds(req, cost, vae_scale_factor)
    if seconds <= max_seconds:
        return
    fields = "width,height,steps,batch_size,n_iter" + (",alwayson_scripts.controlnet.args" if req.units else "")
    raise FieldError(fields, f"{req.width}×{req.height}, {req.steps_run} steps, {req.batch_size}×{req.n_iter} images, "
                             f"{len(req.units)} unit(s){', CFG' if req.cfg > 1.0 else ''} would run about "
                             f"{seconds:.0f} s on this server, more than the {max_seconds:g} s a job may take "
                             "(--max-job-seconds); lower the size, steps, batch_size × n_iter or the number of units")


def check_prompt(name: str, text: str, tokenizer, max_tokens: int) -> None:
    """Refuse a prompt of more than `max_tokens` tokens before it is encoded (a text too long to be
    one is refused by its length, without tokenizing it)."""
    if len(text) > max_tokens * CHARS_PER_TOKEN:
        raise FieldError(name, f"{len(text)} characters, far more than the {max_tokens} tokens a prompt may have "
                               "(--max-prompt-tokens); shorten it")
    if len(text) <= max_tokens:
        return  # a token covers at least one character
    tokens = len(tokenizer(text, verbose=False).input_ids) - 2  # without the start and end tokens
    if tokens > max_tokens:
        raise FieldError(name, f"{tokens} tokens, more than the {max_tokens} a prompt may have (--max-prompt-tokens); "
                               "shorten it")


def admit(req, engine, cost: StepCost, limits) -> None:
    """Every cost check of a generation request (`limits`: a guard.Limits)."""
    for name in ("prompt", "negative_prompt"):
        check_prompt(name, getattr(req, name), engine.pipe.tokenizer, limits.max_prompt_tokens)
    check_time(req, cost, engine.pipe.vae_scale_factor, limits.max_job_seconds)
