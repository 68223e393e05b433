"""How tests/data/depth_anything_reference.npz was made: the authors' Depth Anything V2 code, as
comfyui_controlnet_aux ships it, on a tiny random model in the published layout.

Run OUTSIDE the project (the reference code never enters it), with torch, torchvision, opencv and
huggingface_hub (the /tmp/auxenv of make_teed_reference.py has them) and a checkout of
github.com/Fannovel16/comfyui_controlnet_aux (commit e8b689a, 2026-04-13) whose `src` folder is given:

    /tmp/auxenv/bin/python tests/data/make_depth_anything_reference.py /path/to/comfyui_controlnet_aux/src

controlnet_aux 0.0.10 has no Depth Anything; comfyui_controlnet_aux's `DepthAnythingV2Detector`
(the authors' DepthAnythingV2 and infer_image) is the reference. Its `DepthAnythingV2(encoder="vits")`
is built with the tiny DINOv2 of depth_anything_inputs (width 64, one head, 12 blocks, the vits
feature blocks 2, 5, 8, 11) and a tiny DPT head; the seeded tensors are saved as the published file
is laid out (a plain state dict) and loaded strictly. Each seeded picture goes through the detector
(detect resolution = the shorter side: multiples of 64, so it does not resize) with max_depth=1 as
the ComfyUI node calls it. Stored: seeds, sizes, the raw prediction at the picture size (float32,
`infer_image`) and the uint8 map.
"""

import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, sys.argv[1])
from custom_controlnet_aux.depth_anything_v2 import DepthAnythingV2Detector  # noqa: E402
from custom_controlnet_aux.depth_anything_v2.dinov2 import DinoVisionTransformer  # noqa: E402
from custom_controlnet_aux.depth_anything_v2.dinov2_layers import MemEffAttention  # noqa: E402
from custom_controlnet_aux.depth_anything_v2.dinov2_layers import NestedTensorBlock as Block  # noqa: E402
from custom_controlnet_aux.depth_anything_v2.dpt import DepthAnythingV2, DPTHead  # noqa: E402
from depth_anything_inputs import (  # noqa: E402
    DEPTH,
    DIM,
    FEATURES,
    PICTURE_SEEDS,
    PICTURE_SIZES,
    PROJECTIONS,
    WEIGHT_SEED,
    random_depth_anything_state,
)
from pidinet_inputs import picture  # noqa: E402


def tiny_model() -> DepthAnythingV2:
    model = DepthAnythingV2(encoder="vits", features=FEATURES, out_channels=list(PROJECTIONS))
    model.pretrained = DinoVisionTransformer(  # DINOv2("vits") with the width and heads made tiny
        img_size=518, patch_size=14, embed_dim=DIM, depth=DEPTH, num_heads=1, mlp_ratio=4,
        block_fn=partial(Block, attn_class=MemEffAttention), init_values=1.0, ffn_layer="mlp", block_chunks=0,
        num_register_tokens=0, interpolate_antialias=False, interpolate_offset=0.1)
    model.depth_head = DPTHead(DIM, FEATURES, False, out_channels=list(PROJECTIONS), use_clstoken=False)
    return model


def main():
    torch.set_num_threads(1)
    model = tiny_model()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "depth_anything_v2_vits.pth"
        torch.save(random_depth_anything_state(WEIGHT_SEED), path)
        model.load_state_dict(torch.load(path, map_location="cpu"), strict=True)
    detector = DepthAnythingV2Detector(model.eval(), "depth_anything_v2_vits.pth")
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES), "torch_version": np.array(torch.__version__)}
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        out[f"raw_{i}"] = model.infer_image(bgr, input_size=518, max_depth=1.0).astype(np.float32)
        out[f"map_{i}"] = detector(image, detect_resolution=min(size), output_type="np", max_depth=1.0)[:, :, 0]
        print(i, out[f"raw_{i}"].min(), out[f"raw_{i}"].max(), len(np.unique(out[f"map_{i}"])), flush=True)
    np.savez_compressed(HERE / "depth_anything_reference.npz", **out)


if __name__ == "__main__":
    main()
