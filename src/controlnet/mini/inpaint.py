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
    (`controlnet.evaluation.world`'s label accuracy, restricted to the mask)."""
    from controlnet.evaluation.world import colour_labels, colour_names

    mask = repaint_mask(sample)
    return float((colour_names(image)[mask] == colour_labels(sample)[mask]).mean())


def fill(pipe, samples: list, controlnet=None, **common) -> list[np.ndarray]:
    """(H, W, 3) uint8 pictures: each sample's masked region repainted for its caption, with the
    inpainting ControlNet `controlnet` (its hint: the picture, -1 in the mask) or without control."""
    from controlnet.pipeline import ControlUnit

    maps = [s.conditions["inpaint"] for s in samples]
    units = [ControlUnit(controlnet, maps, resize=None, name="inpaint")] if controlnet is not None else []
    images = pipe([s.caption for s in samples], units=units, output_type="np", **common).images
    return [(im * 255).round().astype(np.uint8) for im in images]


def demo_rows(pipe, controlnet, samples: list, common: dict) -> list[list[np.ndarray]]:
    """One demo row per sample: the masked picture | filled without control | filled with control."""
    from controlnet.world.render import preview

    common = {k: v for k, v in common.items() if k != "output_type"}
    plain, controlled = fill(pipe, samples, None, **common), fill(pipe, samples, controlnet, **common)
    return [[preview(s.conditions["inpaint"]), a, b] for s, a, b in zip(samples, plain, controlled)]
