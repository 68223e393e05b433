"""`controlnet evaluate`'s ControlNet++ protocol figures (`controlnet.metrics.protocol`), for the
conditions that protocol scores, each computed when its detector's weights are in the models folder
(--models-dir / $CONTROLNET_ANNOTATOR_DIR) and otherwise listed as "not computed: give ...".

The published figures these compare with (ControlNet 1.1 / ControlNet++ on SD1.5) are in
docs/evaluation.md; the protocol's detectors differ in places (DPT-Large depth, Mask2Former
segmentation), so the folder's models decide how close a figure can come.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controlnet.annotators.local_models import find_weight, missing_weight


@dataclass(frozen=True)
class ProtocolMetric:
    name: str
    weights: str | None  # the entry the detector needs in the models folder; None: weight-free
    higher_is_better: bool = True
    needs: str = ""  # what else must be installed, for the note
    also: tuple[str, ...] = ()  # other models-folder entries that serve as well, tried in order


CANNY = ProtocolMetric("cnpp_canny_f1", None, needs="kornia")
HED = ProtocolMetric("cnpp_hed_ssim", "ControlNetHED.pth", needs="torchmetrics")
LINEART = ProtocolMetric("cnpp_lineart_ssim", "sk_model.pth", needs="torchmetrics")
DEPTH = ProtocolMetric("cnpp_depth_rmse", "depth", higher_is_better=False)
ADE20K = ProtocolMetric("cnpp_ade20k_miou", "seg_ade20k", also=("seg_ofade20k", "seg_ufade20k", "upernet_global_small.pth"))
# condition kind (a dataset's --annotator, or a world kind) -> the protocol figure that scores it
BY_KIND = {"canny": CANNY, "edges": CANNY, "softedge_hed": HED, "hed": HED, "softedge": HED,
           "lineart_realistic": LINEART, "lineart": LINEART, "depth": DEPTH, "seg_ade20k": ADE20K, "seg": ADE20K,
           "seg_ofade20k": ADE20K, "seg_ufade20k": ADE20K}
# pose keypoint AP (controlnet.metrics.pose) re-detects people by DWPose when both its files are in the models
# folder, else by OpenPose's body network
POSE_METRIC = ProtocolMetric("cnpp_pose_ap", "yolox_l.onnx")
POSE = ("openpose", "openpose_full", "openpose_hand", "openpose_face", "pose", "dw_openpose_full")
POSE_NOTE = ("not computed: give yolox_l.onnx and dw-ll_ucoco_384.onnx (DWPose, huggingface.co/yzd-v/DWPose) or "
             "body_pose_model.pth (OpenPose, huggingface.co/lllyasviel/Annotators) in the models folder "
             "(--models-dir or $CONTROLNET_ANNOTATOR_DIR, flat or in its openpose/ subfolder)")
LOWER_IS_BETTER = tuple(m.name for m in (CANNY, HED, LINEART, DEPTH, ADE20K) if not m.higher_is_better)


def metric_for(kind: str, world: bool) -> ProtocolMetric | None:
    """The protocol figure of a condition kind; the world's seg colours are not ADE20K classes."""
    if kind in POSE:
        return POSE_METRIC
    metric = BY_KIND.get(kind)
    return None if metric is ADE20K and world else metric


def weights_for(metric: ProtocolMetric, folder) -> str | None:
    """The detector's weights in the models folder (the first of its entries found), or None."""
    if metric is POSE_METRIC:
        return pose_detector(folder)
    if not metric.weights or folder is None:
        return None
    found = (find_weight(name, folder) for name in (metric.weights, *metric.also))
    return next((str(path) for path in found if path is not None), None)


def not_computed(kinds, world: bool, folder, size: int) -> dict:
    """{metric: why} for the protocol figures of `kinds` that cannot be computed here (pictures of `size` px)."""
    import importlib.util

    from controlnet.metrics.protocol import MS_SSIM_MIN_SIDE

    out = {}
    for kind in kinds:
        metric = metric_for(kind, world)
        if metric is None:
            continue
        if metric is POSE_METRIC:
            if pose_detector(folder) is None:
                out[metric.name] = POSE_NOTE
        elif metric in (HED, LINEART) and size < MS_SSIM_MIN_SIDE:
            out[metric.name] = f"not computed: multi-scale SSIM needs pictures of at least {MS_SSIM_MIN_SIDE} px, not {size}"
        elif metric.needs and importlib.util.find_spec(metric.needs) is None:
            out[metric.name] = f"not computed: pip install {metric.needs} (the eval extra)"
        elif metric.weights and weights_for(metric, folder) is None:
            also = f" (or one named {' or '.join(metric.also)})" if metric.also else ""
            out[metric.name] = "not computed: give " + missing_weight(metric.weights, "it", folder).split(" needs ", 1)[1] + also
    return out


def pose_detector(folder) -> str | None:
    """DWPose's detector file when both DWPose files are in the models folder, else OpenPose's body file, else None."""
    if folder is None:
        return None
    dw = [find_weight(name, folder) for name in ("yolox_l.onnx", "dw-ll_ucoco_384.onnx")]
    if all(p is not None and p.parent == dw[0].parent for p in dw):
        return str(dw[0])
    body = find_weight("body_pose_model.pth", folder)
    return None if body is None else str(body)


def pose_record(image: np.ndarray, condition: np.ndarray, weights: str) -> np.ndarray:
    """One picture's keypoint-AP record: people re-detected in `image` against those drawn in `condition`."""
    from controlnet.metrics.pose import picture_record, pose_from_map

    h, w = image.shape[:2]
    if weights.endswith(".onnx"):
        from controlnet.annotators.dwpose import people

        found = people(np.ascontiguousarray(image[..., :3]), weights)
    else:
        from controlnet.annotators.openpose_modules import people

        found = people(np.ascontiguousarray(image[..., :3]), weights, hands=False, face=False)
    truth = pose_from_map(condition)
    if truth and condition.shape[:2] != (h, w):
        truth = [t * [w / condition.shape[1], h / condition.shape[0]] for t in truth]
    return picture_record([p.body * [w, h] for p in found], [p.score for p in found], truth)


def picture_score(metric: ProtocolMetric, image: np.ndarray, condition: np.ndarray, weights):
    """One picture's figure (its intersection/union counts for mIoU, its detections' record for pose AP)."""
    from controlnet.metrics import protocol as P

    if metric is POSE_METRIC:
        return pose_record(image, condition, weights)
    if metric is CANNY:
        return P.canny_f1(image, condition)
    if metric in (HED, LINEART):
        from controlnet.metrics.fidelity import reextract

        return P.ms_ssim(reextract("softedge_hed" if metric is HED else "lineart_realistic", image, model=weights),
                         condition)
    if metric is DEPTH:
        from controlnet.annotators.depth import predict_depth

        return P.depth_rmse(P.depth_to_protocol_gray(predict_depth(image, weights)), P.condition_to_protocol_gray(condition))
    from controlnet.annotators.ade20k import ADE20K_PALETTE
    from controlnet.annotators.segmentation import ade20k_test_labels
    from controlnet.metrics.segmentation import colors_to_labels

    labels = ade20k_test_labels(image, weights)
    return P.intersect_union(labels, colors_to_labels(condition, ADE20K_PALETTE), len(ADE20K_PALETTE))


def estimate(metric: ProtocolMetric, images, conditions, folder, level: float):
    """The figure over a row's pictures with its bootstrap interval, or None when it cannot be computed."""
    from controlnet.evaluation.stats import mean_ci, statistic_ci
    from controlnet.metrics.protocol import dataset_miou

    weights = weights_for(metric, folder)
    if metric.weights and weights is None:
        return None
    scores = [picture_score(metric, img, cond, weights) for img, cond in zip(images, conditions)]
    if metric is ADE20K:
        return statistic_ci(np.stack(scores), dataset_miou, level)
    if metric is POSE_METRIC:
        from controlnet.metrics.pose import keypoint_ap

        return statistic_ci(np.stack(scores), keypoint_ap, level)
    return mean_ci(scores, level=level)
