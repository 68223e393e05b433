"""Scores with the miniature world's exact ground truth (`controlnet.world`): the scene says which
colour belongs at every pixel and which shape is in front, so no learned detector is needed.

- label accuracy / mIoU: each pixel is named by its nearest world colour and compared with the
  colour the scene puts there (the segmentation re-detected by colour);
- depth-order error: for each pair of overlapping shapes of different colours, is the shape drawn
  in front the one whose colour covers their overlap? (a ratio over pairs, not over pictures);
- colour depth RMSE: the depth map implied by the colour labels (each pixel takes the depth of the
  nearest shape of its colour) against the condition, on the 0-255 scale;
- prompt adherence: background and every shape have the colours of the scene
  (`controlnet.metrics.adherence`).
"""

from __future__ import annotations

import numpy as np

from controlnet.metrics.depth import depth_rmse


def colour_names(image: np.ndarray) -> np.ndarray:
    """(H, W) nearest world colour name of every pixel."""
    from controlnet.world.palette import nearest_colour

    h, w, _ = image.shape
    return nearest_colour(image.reshape(-1, 3)).reshape(h, w)


def colour_labels(sample) -> np.ndarray:
    """(H, W) names of the colour the scene puts at each pixel."""
    names = np.empty(sample.labels.shape, dtype=object)
    names[:] = sample.scene.background
    for k, shape in enumerate(sample.scene.shapes):
        names[sample.labels == k + 1] = shape.colour
    return names


def label_scores(image: np.ndarray, sample) -> tuple[float, float]:
    """(pixel accuracy, mIoU over the scene's colours) of the picture's nearest-colour names."""
    pred, truth = colour_names(image), colour_labels(sample)
    ious = []
    for name in set(truth.ravel()):
        inter = np.logical_and(pred == name, truth == name).sum()
        union = np.logical_or(pred == name, truth == name).sum()
        ious.append(inter / union)
    return float((pred == truth).mean()), float(np.mean(ious))


def order_errors(image: np.ndarray, sample) -> tuple[int, int]:
    """(wrong, judged) overlapping pairs: the front shape's colour must dominate the overlap."""
    pred = colour_names(image)
    shapes = sample.scene.shapes
    masks = [s.mask(sample.size) > 0 for s in shapes]
    wrong = judged = 0
    for i in range(len(shapes)):
        for j in range(i + 1, len(shapes)):  # j is drawn after i: in front
            overlap = masks[i] & masks[j]
            if overlap.sum() < 4 or shapes[i].colour == shapes[j].colour:
                continue
            judged += 1
            front, back = (pred[overlap] == shapes[j].colour).sum(), (pred[overlap] == shapes[i].colour).sum()
            wrong += int(front <= back)
    return wrong, judged


def colour_depth(image: np.ndarray, sample) -> np.ndarray:
    """(H, W) uint8 depth implied by colours: a pixel of a shape's colour takes the depth of the
    nearest shape of that colour covering it (or, outside them all, of the nearest of that colour);
    every other pixel is background (0). Exact on the true pictures."""
    from controlnet.world.render import depth_levels

    pred = colour_names(image)
    labels = np.zeros(pred.shape, np.uint8)
    shapes = sample.scene.shapes
    for k, shape in enumerate(shapes):  # later shapes are nearer and win
        labels[pred == shape.colour] = k + 1
    for k, shape in enumerate(shapes):
        labels[(pred == shape.colour) & (shape.mask(sample.size) > 0)] = k + 1
    return depth_levels(len(shapes))[labels]


def world_scores(kind: str, image: np.ndarray, sample) -> dict[str, tuple[float, float]]:
    """{metric: (value, weight)} of one picture for a world condition `kind`; a metric's mean over
    pictures is sum(value·weight)/sum(weight) (weight 1 but for the pair-counted depth order)."""
    from controlnet.metrics.adherence import colour_check
    from controlnet.metrics.fidelity import control_fidelity_scores

    out: dict[str, tuple[float, float]] = {}
    if kind in ("edges", "canny", "outline"):
        ref = sample.conditions[kind]
        out.update({k: (v, 1.0) for k, v in control_fidelity_scores("canny", image, ref).items()})
    accuracy, miou = label_scores(image, sample)
    out["label_accuracy"], out["label_miou"] = (accuracy, 1.0), (miou, 1.0)
    if kind == "depth":
        wrong, judged = order_errors(image, sample)
        out["depth_order_error"] = (wrong / judged if judged else 0.0, float(judged))
        out["depth_rmse"] = (depth_rmse(colour_depth(image, sample), sample.conditions["depth"]), 1.0)
    out["prompt_adherence"] = (float(colour_check(image, sample.scene)["ok"]), 1.0)
    return out
