"""Time per 512×512 image of each annotator (CPU). A script, not a test:

    python benchmarks/annotators.py [--repeat 3] [--only canny,mlsd]

Learned annotators need local weights we do not ship: they run on tiny random stand-ins of the
same classes (so their times measure the plumbing, not the real networks) or are skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import numpy as np
from skimage import data

from controlnet.annotators import annotate, list_annotators


def tiny_models(folder: Path) -> dict[str, dict]:
    """Random tiny DPT / UperNet / HED / lineart weights saved like the real files."""
    import torch
    from transformers import (
        ConvNextConfig,
        DPTConfig,
        DPTForDepthEstimation,
        DPTImageProcessorPil,
        SegformerImageProcessorPil,
        UperNetConfig,
        UperNetForSemanticSegmentation,
    )

    from controlnet.annotators.hed_network import ControlNetHED
    from controlnet.annotators.lineart_network import LineartGenerator

    torch.manual_seed(0)
    dpt = DPTConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=37, image_size=384,
                    patch_size=16, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 8],
                    fusion_hidden_size=16, reassemble_factors=[4, 2, 1, 0.5])
    DPTForDepthEstimation(dpt).save_pretrained(folder / "dpt")
    DPTImageProcessorPil(size={"height": 384, "width": 384}).save_pretrained(folder / "dpt")
    backbone = ConvNextConfig(hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1],
                              out_features=["stage1", "stage2", "stage3", "stage4"])
    UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone, hidden_size=16, auxiliary_in_channels=32,
                                                 auxiliary_channels=8, num_labels=150)).save_pretrained(folder / "seg")
    SegformerImageProcessorPil(size={"height": 512, "width": 512}).save_pretrained(folder / "seg")
    torch.save(ControlNetHED().state_dict(), folder / "ControlNetHED.pth")  # real size: HED is small
    torch.save(LineartGenerator().state_dict(), folder / "sk_model.pth")  # real size too
    torch.save(LineartGenerator().state_dict(), folder / "sk_model2.pth")
    return {
        "depth": {"model": folder / "dpt"}, "normal_midas": {"model": folder / "dpt"},
        "seg_ade20k": {"model": folder / "seg"}, "softedge_hed": {"model": folder},
        "scribble_hed": {"model": folder}, "lineart_realistic": {"model": folder}, "lineart_coarse": {"model": folder},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated annotator names")
    args = parser.parse_args()
    image = data.astronaut()  # 512×512
    mask = np.zeros(image.shape[:2], bool)
    mask[128:384, 128:384] = True
    only = {n for n in args.only.split(",") if n}
    with tempfile.TemporaryDirectory() as tmp:
        params = tiny_models(Path(tmp))
        params["inpaint"] = {"mask": mask}
        has_mediapipe = importlib.util.find_spec("mediapipe") is not None
        print(f"{'annotator':<20} {'ms / 512x512':>12}  note")
        for spec in list_annotators():
            if only and spec.name not in only:
                continue
            note = ""
            if spec.name in ("pose", "mediapipe_face") and not has_mediapipe:
                print(f"{spec.name:<20} {'-':>12}  skipped: mediapipe not installed")
                continue
            if spec.name in ("depth", "normal_midas", "seg_ade20k"):
                note = "tiny random model: plumbing only"
            elif spec.name in ("softedge_hed", "scribble_hed", "lineart_realistic", "lineart_coarse"):
                note = "real architecture, random weights"
            kwargs = params.get(spec.name, {})
            annotate(spec.name, image, **kwargs)  # warm-up: model loading, caches
            start = time.perf_counter()
            for _ in range(args.repeat):
                annotate(spec.name, image, **kwargs)
            ms = (time.perf_counter() - start) / args.repeat * 1000
            print(f"{spec.name:<20} {ms:>12.1f}  {note}")


if __name__ == "__main__":
    main()
