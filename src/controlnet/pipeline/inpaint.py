"""Inpainting and outpainting for `ControlPipeline`: the mask, the masked-image latents, the blends.

Two ways to keep the unmasked area, as the public implementations do:
- "blend" (diffusers' `StableDiffusionControlNetInpaintPipeline`): after every scheduler step the
  latent outside the mask is replaced by the init latent noised to the next timestep (4-channel
  U-Nets; a 9-channel inpainting U-Net reads [latents, mask, masked-image latents] instead).
- "inpaint_only" (A1111's ControlNet extension): the predicted x0 is replaced by the init latent
  outside the mask before each step, so the model's output agrees with the original there.
Optionally (`mask_blur`), the decoded picture is pasted back onto the original through a dilated,
blurred mask, so the pixels outside the mask are exactly the original's. Off by default: diffusers
does not do it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from controlnet import checks
from controlnet.errors import InputError
from controlnet.images import as_array, to_rgb, to_rgb8
from controlnet.pipeline.images import fit, fit_mask, picture_area, resize_mode

MODES = ("blend", "inpaint_only")


def binary_mask(mask, label: str = "mask_image") -> np.ndarray:
    """A bool H×W mask (True = repaint) from an image that is pure black and white, or a bool
    array. Grey, coloured or anti-aliased masks are refused: the inpaint convention is binary."""
    arr = as_array(mask)
    if arr.dtype == bool:
        return arr if arr.ndim == 2 else arr.any(axis=2)
    x = to_rgb(arr)
    odd = ~((x == 0.0) | (x == 1.0)).all(axis=2) | (x != x[:, :, :1]).any(axis=2)
    if odd.any():
        raise InputError(f"{label} must be binary, black (keep) and white (repaint) only; {int(odd.sum()):,} of "
                         f"{odd.size:,} pixels are grey or coloured (anti-aliased edges, a photo?). Threshold it "
                         "first, e.g. mask = grey > 127")
    return x[:, :, 0] > 0.5


def inpaint_map(picture, mask) -> np.ndarray:
    """The control_v11p_sd15_inpaint condition from a picture and a binary mask of its size: the
    `inpaint` annotator's RGBA map (alpha 255 = repaint), which the pipeline reads as -1 there."""
    from controlnet.annotators.inpaint import inpaint

    if mask is None:
        raise InputError("the inpaint condition needs a mask, white where to repaint (CLI: --inpaint-mask)")
    rgb = to_rgb8(picture)
    masked = binary_mask(mask, "the inpaint mask")
    _same_size(masked, rgb, "the inpaint mask", "the picture")
    return inpaint(rgb, masked)


FILL_BLURS = ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2))  # A1111's masking.fill: (blur, repeats), coarse to fine


def fill_masked(picture, mask) -> np.ndarray:
    """A1111's inpainting_fill "fill": the masked area painted over with the colours around it, blurred
    ever finer, so sampling starts from the surroundings instead of what was there. RGB in [0, 1]."""
    rgb = to_rgb(picture)
    masked = binary_mask(mask)
    _same_size(masked, rgb, "the mask", "the picture")
    keep = (~masked).astype(np.float32)
    out = np.zeros_like(rgb)
    for sigma, repeats in FILL_BLURS:
        weight = _blur(keep, sigma)[:, :, None]
        colour = np.clip(_blur(rgb * keep[:, :, None], sigma) / np.maximum(weight, 1e-6), 0.0, 1.0)
        for _ in range(repeats):
            out = weight * colour + (1 - weight) * out
    return np.where(masked[:, :, None], out, rgb).astype(np.float32)


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur; a wide one on a smaller copy (as smooth, and far cheaper than a 2,000-tap kernel)."""
    k = max(1, int(sigma // 8))
    if k == 1:
        return cv2.GaussianBlur(x, (0, 0), sigma)
    h, w = x.shape[:2]
    small = cv2.resize(x, (max(1, w // k), max(1, h // k)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / k), (w, h), interpolation=cv2.INTER_LINEAR)


def _same_size(mask: np.ndarray, picture: np.ndarray, label: str, of: str) -> None:
    if mask.shape[:2] != picture.shape[:2]:
        raise InputError(f"{label} is {mask.shape[1]}×{mask.shape[0]} but {of} is {picture.shape[1]}×"
                         f"{picture.shape[0]}; give a mask of the picture's size")


@dataclass
class Inpaint:
    """One call's inpainting: the init picture and mask fitted to the output, then (after `start`)
    their latents. mask: 1 = repaint; the latent mask is the pixel mask downsampled (nearest)."""

    mode: str
    blur: float | None
    strength: float
    picture: np.ndarray  # H×W×3 in [0, 1]
    mask: np.ndarray  # H×W bool
    nine_channels: bool
    latent_mask: torch.Tensor | None = None
    image_latents: torch.Tensor | None = None
    masked_latents: torch.Tensor | None = None
    noise: torch.Tensor | None = None


def nine_channel(unet, vae) -> bool:
    """An SD inpainting U-Net: its input is [latents, mask, masked-image latents]."""
    return unet.config.in_channels == 2 * vae.config.latent_channels + 1


def check(init_image, mask_image, mode, blur, resize, size_wh: tuple[int, int],
          nine: bool) -> tuple[Inpaint | None, np.ndarray | None]:
    """(the inpainting of a call, checked and fitted to the output, or None for txt2img and plain
    img2img; the init picture fitted to the output, or None)."""
    mode = checks.choice("inpaint_mode", mode, MODES)
    blur = None if blur is None else checks.number("mask_blur (a sigma in pixels)", blur, lo=0.0, hi=256.0)
    resize = resize_mode(resize)
    if init_image is None:
        if mask_image is not None:
            raise InputError("mask_image needs init_image: give the picture to inpaint (CLI: --init-image)")
        if nine:
            raise InputError("this base U-Net is an inpainting model (9 input channels); give init_image and mask_image "
                             "(CLI: --init-image, --inpaint-mask)")
        return None, None
    rgb = to_rgb(init_image)
    if resize is None and rgb.shape[:2] != size_wh[::-1]:
        raise InputError(f"init_image is {rgb.shape[1]}×{rgb.shape[0]} but the output is {size_wh[0]}×{size_wh[1]} and "
                         "init_resize is none; give a picture of the output's size or an init_resize (crop_and_resize, "
                         "just_resize, resize_and_fill)")
    picture = fit(rgb, size_wh, resize)
    mask = ~picture_area(rgb.shape[:2], size_wh, resize)  # outpainting: the resize_and_fill border
    if mask_image is not None:
        masked = binary_mask(mask_image)
        _same_size(masked, rgb, "mask_image", "init_image")
        if not masked.any():
            raise InputError("mask_image is empty (all black): paint the region to repaint in white")
        mask |= fit_mask(masked, size_wh, resize)
    if not mask.any():
        if nine:
            raise InputError("this base U-Net is an inpainting model (9 input channels); give mask_image too "
                             "(CLI: --inpaint-mask)")
        if mask_image is not None:
            raise InputError("mask_image's white area vanishes when the picture is fitted to the output; enlarge it")
        return None, picture
    return Inpaint(mode, blur, 1.0, picture, mask, nine), picture


@torch.no_grad()
def start(spec: Inpaint, pipe, noise: torch.Tensor, scheduler, timesteps) -> torch.Tensor:
    """Encode the picture (and the masked picture, for 9 channels); the first latents: pure noise
    at strength 1 (diffusers' `is_strength_max`), else the init latent noised to the first timestep."""
    batch, (h, w) = noise.shape[0], spec.picture.shape[:2]
    device, dtype = noise.device, noise.dtype
    mask = torch.from_numpy(spec.mask.astype(np.float32))[None, None]
    spec.latent_mask = F.interpolate(mask, size=noise.shape[-2:]).to(device, dtype).expand(batch, -1, -1, -1)
    spec.image_latents = pipe.encode_image(spec.picture, w, h).to(device, dtype).expand(batch, -1, -1, -1)
    if spec.nine_channels:
        grey = np.where(spec.mask[:, :, None], np.float32(0.5), spec.picture)  # 0 in [-1, 1], as diffusers
        spec.masked_latents = pipe.encode_image(grey, w, h).to(device, dtype).expand(batch, -1, -1, -1)
    spec.noise = noise
    if spec.strength == 1.0:
        return noise * scheduler.init_noise_sigma
    return scheduler.add_noise(spec.image_latents, noise, timesteps[:1].repeat(batch))


def unet_input(spec: Inpaint | None, x_in: torch.Tensor) -> torch.Tensor:
    """What the U-Net reads: a 9-channel U-Net gets the mask and masked-image latents appended
    (the ControlNets still read the 4-channel latents)."""
    if spec is None or spec.masked_latents is None:
        return x_in
    k = x_in.shape[0] // spec.latent_mask.shape[0]  # 2 with CFG
    return torch.cat([x_in, spec.latent_mask.repeat(k, 1, 1, 1), spec.masked_latents.repeat(k, 1, 1, 1)], dim=1)


def model_output(spec: Inpaint | None, out: torch.Tensor, x_t: torch.Tensor, t, scheduler) -> torch.Tensor:
    """inpaint_only: the model output rewritten so its x0 is the init latent outside the mask.
    x_t is the scaled model input (DDPM scale), so ᾱ of timestep t converts between the forms."""
    if spec is None or spec.mode != "inpaint_only":
        return out
    abar = scheduler.alphas_cumprod[int(round(float(t)))].to(out.device, out.dtype)
    a, s = abar.sqrt(), (1 - abar).sqrt()
    kind = scheduler.config.prediction_type
    x0 = {"epsilon": (x_t - s * out) / a, "v_prediction": a * x_t - s * out, "sample": out}.get(kind)
    if x0 is None:
        raise InputError(f"inpaint_only does not support the prediction type {kind!r}; use inpaint_mode='blend'")
    m = spec.latent_mask
    x0 = m * x0 + (1 - m) * spec.image_latents
    eps = (x_t - a * x0) / s
    return {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[kind]


def after_step(spec: Inpaint | None, x: torch.Tensor, i: int, timesteps, scheduler) -> torch.Tensor:
    """blend on a 4-channel U-Net: outside the mask, the init latent noised to the next timestep
    (clean after the last step), exactly as diffusers does."""
    if spec is None or spec.mode != "blend" or spec.nine_channels:
        return x
    proper = spec.image_latents
    if i < len(timesteps) - 1:
        proper = scheduler.add_noise(proper, spec.noise, torch.tensor([timesteps[i + 1]]))
    m = spec.latent_mask
    return (1 - m) * proper + m * x


def paste_back(spec: Inpaint | None, pixels: torch.Tensor) -> torch.Tensor:
    """The decoded pictures (B, 3, H, W) in [0, 1] blended onto the original through the mask
    dilated by 2·blur and blurred with sigma `blur` (0: pasted as is); off when blur is None."""
    if spec is None or spec.blur is None:
        return pixels
    m = spec.mask.astype(np.float32)
    if spec.blur > 0:
        r = int(round(2 * spec.blur))
        m = cv2.dilate(m, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
        m = np.maximum(cv2.GaussianBlur(m, (0, 0), spec.blur), spec.mask)
    m = torch.from_numpy(m)[None, None].to(pixels.device, pixels.dtype)
    original = torch.from_numpy(spec.picture).permute(2, 0, 1)[None].to(pixels.device, pixels.dtype)
    return m * pixels + (1 - m) * original
