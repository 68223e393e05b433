"""BoostingMonocularDepth (Miangoleh et al. 2021) around LeReS, as controlnet_aux's `estimateboost` runs it
for `depth_leres++`: the resolution search of the paper's section 5, the double estimate (LeReS at 448 px
and at that resolution, merged by the pix2pix network at 1024 px) and, when that resolution is at most
the picture's long side, local refinement: gradient-dense patches, each double-estimated and merged into
the base estimate under a Gaussian mask, biggest first.

Quirks of the reference kept so maps agree: OpenCV resizes called with the interpolation in the `dst`
slot resize bilinearly; the merged patch is fitted to the base estimate by a degree-1 polyfit; the base
that patches are cut from is never updated (only the result is). Where the reference fails (a picture
whose long side is under 160 px leaves its resolution search without a step), the first step is taken.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from .local_models import device_of

FIELD = 448  # LeReS's receptive field: the low-resolution estimate, and half of a patch's high one
MERGE_SIZE = 1024
MAX_SIZE = 1600  # R_max
SEARCH_STEP = 32  # the resolution search works at 1/32
CONFIDENCE = 0.2  # R20: at most 20% of pixels without context
UPSCALE = 3


def grayscale(image: np.ndarray) -> np.ndarray:
    return np.dot(image[..., :3], [0.2989, 0.5870, 0.1140])


def gradient(image: np.ndarray) -> np.ndarray:
    gray = grayscale(image)
    return np.abs(cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)) + np.abs(cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3))


def _binary_at(edges: np.ndarray, size: int) -> np.ndarray:
    """The edge map max-pooled by whole blocks (zero-padded at the end), resized to size², thresholded at 0.5."""
    from skimage.measure import block_reduce

    block = edges.shape[0] // size
    pooled = cv2.resize(block_reduce(edges, (block, block), np.max), (size, size))
    return (pooled >= 0.5).astype(pooled.dtype)


def processing_resolution(image: np.ndarray) -> tuple[int, float]:
    """(R20, the share of the picture near edges): the largest resolution at which at most 20% of pixels
    are farther than the receptive field from an edge, and the density that scales the patches."""
    side = int(min(image.shape[:2]))
    grad = cv2.resize(gradient(image), (side, side))
    middle = grad.min() + 0.4 * (grad.max() - grad.min())
    edges = (grad >= middle).astype(np.float64)
    field = np.ones((FIELD // SEARCH_STEP,) * 2)
    limit = min(MAX_SIZE, UPSCALE * max(image.shape[:2]))
    best = FIELD // SEARCH_STEP
    binary = None
    for size in range(FIELD // SEARCH_STEP, int(limit / SEARCH_STEP), FIELD // (2 * SEARCH_STEP)):
        binary = _binary_at(edges, size)
        if (1 - cv2.dilate(binary, field, iterations=1)).mean() > CONFIDENCE:
            break
        best = size
    if binary is None:
        binary = _binary_at(edges, FIELD // SEARCH_STEP)
    near_edges = cv2.dilate(binary, np.ones((FIELD // (4 * SEARCH_STEP),) * 2), iterations=1)
    return best * SEARCH_STEP, float(near_edges.mean())


def _unit(x):
    return (x - x.min()) / (x.max() - x.min())


def merge(merge_net, low: np.ndarray, high: np.ndarray):
    """The merge network on two MERGE_SIZE² estimates, each min-max scaled to [-1, 1]; its output in [0, 1] (torch)."""
    import torch

    with torch.inference_mode():
        pair = [_unit(torch.from_numpy(d)[None, None].to(device_of(merge_net))) * 2 - 1 for d in (low, high)]
        return (merge_net(torch.cat(pair, 1)) + 1) / 2


def _to_merge_size(depth: np.ndarray) -> np.ndarray:
    return cv2.resize(depth, (MERGE_SIZE, MERGE_SIZE), interpolation=cv2.INTER_CUBIC)


def double_estimate(image: np.ndarray, high: int, estimate, merge_net) -> np.ndarray:
    """LeReS at FIELD² and at high², merged: MERGE_SIZE² float32 in [0, 1]."""
    estimates = [_to_merge_size(estimate(image, size, size)) for size in (FIELD, high)]
    return _unit(merge(merge_net, *estimates))[0, 0].float().cpu().numpy()


@functools.cache
def blend_mask() -> np.ndarray:
    """The reference's 3000² patch mask: 1 inside a 15% margin, Gaussian-blurred (σ 187, 749 taps, OpenCV's
    reflected border), scaled to 0..1. The square is a product of two intervals and the Gaussian separable,
    so it is the outer product of one blurred interval with itself (float rounding apart): milliseconds,
    where the reference's 2-D blur takes seconds per call. Made once."""
    size = 3000
    margin, sigma = int(0.15 * size), int(size / 16)
    interval = np.zeros((1, size), np.float32)
    interval[0, margin:size - margin] = 1
    profile = cv2.GaussianBlur(interval, (2 * int(np.ceil(2 * sigma)) + 1, 1), sigma, sigmaY=0,
                               borderType=cv2.BORDER_REFLECT_101)[0]
    mask = np.outer(profile, profile)
    return ((mask - mask.min()) / (mask.max() - mask.min())).astype(np.float32)


def boosted_depth(image: np.ndarray, estimate, merge_net) -> np.ndarray:
    """LeReS++ depth (float, the image's size, larger = farther) of an RGB uint8 image. `estimate(image, width,
    height)`: LeReS's depth of the image resized to width x height, at the image's size (leres.leres_depth)."""
    h, w = image.shape[:2]
    whole_size, density = processing_resolution(image)
    whole = double_estimate(image, whole_size, estimate, merge_net)
    if max(h, w) < whole_size:  # no local refinement
        return cv2.resize(whole, (w, h), interpolation=cv2.INTER_CUBIC)
    factor = max(min(1.0, 4 * density * whole_size / MAX_SIZE), 0.2)
    long, short = 2 * whole_size, round(2 * whole_size * min(h, w) / max(h, w))
    rows, cols = (long, short) if h > w else (short, long)
    target = cv2.resize(image, (int(round(cols / factor)), int(round(rows / factor))), interpolation=cv2.INTER_CUBIC)
    return _refine(image.shape, target, whole, _patches(target, factor), estimate, merge_net)


def _grid(height: int, width: int, half: int, stride: int) -> list[list[int]]:
    """The initial patches [x, y, w, h], 2·half square, column by column."""
    return [[x - half, y - half, 2 * half, 2 * half]
            for x in range(half, width - half, stride) for y in range(half, height - half, stride)]


def _density(integral: np.ndarray, rect) -> float:
    x, y, w, h = rect
    return (integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]) / (w * h)


def _patches(image: np.ndarray, factor: float) -> list[list[int]]:
    """Patches [x, y, w, h] where the gradient is denser than the picture's, each grown while it stays so,
    biggest first (the order of the grid among equals)."""
    grad = gradient(image)
    grad[grad < grad[grad > 0].mean()] = 0
    mean_density = grad.sum() / grad.size
    integral = cv2.integral(grad)
    height, width = integral.shape
    half = int(round(FIELD * 2 / 2))
    step = int(32 / factor)
    chosen = []
    for rect in _grid(image.shape[0], image.shape[1], half, int(round(half * 0.75))):
        if _density(integral, rect) < mean_density:
            continue
        while True:
            grown = [rect[0] - step // 2, rect[1] - step // 2, rect[2] + step, rect[3] + step]
            if grown[0] < 0 or grown[1] < 0 or grown[1] + grown[3] >= height or grown[0] + grown[2] >= width:
                break
            if _density(integral, grown) < mean_density:
                break
            rect = grown
        chosen.append(rect)
    return sorted(chosen, key=lambda r: r[2], reverse=True)


def _refine(shape, target: np.ndarray, whole: np.ndarray, patches, estimate, merge_net) -> np.ndarray:
    """Each patch double-estimated at FIELD / 2·FIELD, merged with the base under the mask, at the input's scale."""
    scale = shape[0] / target.shape[0]
    size = (round(target.shape[1] * scale), round(target.shape[0] * scale))
    rgb = cv2.resize(target, size, interpolation=cv2.INTER_CUBIC)
    base = cv2.resize(whole, size, interpolation=cv2.INTER_CUBIC)
    result = base.copy()
    mask = None
    for rect in patches:
        x, y, w, h = np.round(np.array(rect) * scale).astype(int)
        patch_base = base[y:y + h, x:x + w]
        refined = double_estimate(rgb[y:y + h, x:x + w], 2 * FIELD, estimate, merge_net)
        patch_base_big = _to_merge_size(patch_base)
        mapped = merge(merge_net, patch_base_big, refined)[0, 0].float().cpu().numpy()
        fitted = np.polyval(np.polyfit(mapped.reshape(-1), patch_base_big.reshape(-1), deg=1), mapped.reshape(-1))
        merged = cv2.resize(fitted.reshape(mapped.shape), patch_base.shape[::-1], interpolation=cv2.INTER_CUBIC)
        if mask is None or mask.shape != patch_base.shape:
            mask = cv2.resize(blend_mask(), patch_base.shape[::-1], interpolation=cv2.INTER_LINEAR)
        result[y:y + h, x:x + w] = result[y:y + h, x:x + w] * (1 - mask) + merged * mask
    return cv2.resize(result, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
