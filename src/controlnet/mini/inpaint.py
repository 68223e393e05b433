"""The built-in inpainting ControlNet on held-out world samples: fill each sample's masked region
with and without control, and score the fill against the scene's exact labels.

A world sample's `conditions["inpaint"]` is the inpaint annotator's RGBA map (the picture, alpha 255
where to repaint). "Without control" is the same inpainting sampling of the same base model with no
ControlNet, so the figure isolates what the ControlNet adds.
"""

from __future__ import annotations

import numpy as np


def repaint_mask(sample) -> np.ndarray:
    """(H, W) bool: the pixels the sample's inpaint map asks to repaint."""
    return sample.conditions["inpaint"][:, :, 3] > 127


def masked_label_accuracy(image: np.ndarray, sample) -> float:
    """Share of the masked pixels whose nearest world colour is the one the scene puts there
    (`controlnet.metrics.world`'s label accuracy, restricted to the mask)."""
    from controlnet.metrics.world import colour_labels, colour_names

    mask = repaint_mask(sample)
    return float((colour_names(image)[mask] == colour_labels(sample)[mask]).mean())


def fill(pipe, samples: list, controlnet=None, weight: float = 1.0, inpaint: bool = True, **common) -> list[np.ndarray]:
    """(H, W, 3) uint8 pictures: each sample's masked region repainted for its caption by the
    pipeline's inpainting (`init_image`, `mask_image`; one call per sample, as each has its own
    picture), with the inpainting ControlNet `controlnet` (hint: the picture, -1 in the mask) or
    without control. `inpaint=False` draws from scratch instead (no init picture, no blending)."""
    from controlnet.pipeline import ControlUnit
    from controlnet.pipeline.inpaint import inpaint_map

    out = []
    for s in samples:
        mask = repaint_mask(s)
        units = [ControlUnit(controlnet, inpaint_map(s.image, mask), resize=None, weight=weight, name="inpaint")
                 ] if controlnet is not None else []
        given = dict(init_image=s.image, mask_image=mask) if inpaint else {}
        image = pipe(s.caption, units, output_type="np", **given, **common).images[0]
        out.append((image * 255).round().astype(np.uint8))
    return out


def demo_rows(pipe, controlnet, samples: list, settings: dict) -> list[list[np.ndarray]]:
    """`controlnet demo`'s rows for the inpainting ControlNet, one per sample, upscaled as its other
    rows: the masked picture | filled without control | filled with control | that with the mask's
    outline drawn over it (does the fill continue the shapes across the mask's edge?)."""
    from controlnet.world.grid import outline, overlay_outline, upscale
    from controlnet.world.render import preview

    common = {k: v for k, v in settings.items() if k != "weight"}
    plain = fill(pipe, samples, None, **common)
    controlled = fill(pipe, samples, controlnet, weight=settings.get("weight", 1.0), **common)
    rows = []
    for s, a, b in zip(samples, plain, controlled):
        edge = outline(np.repeat(repaint_mask(s)[:, :, None], 3, axis=2), "seg")  # the mask's boundary
        rows.append([upscale(preview(s.conditions["inpaint"])), upscale(a), upscale(b), overlay_outline(upscale(b), edge)])
    return rows
