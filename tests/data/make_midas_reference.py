"""How tests/data/midas_reference.npz was made: controlnet_aux 0.0.10's MidasDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run (timm 1.0.31 comes with it)
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_midas_reference.py

The real DPT-Hybrid (dpt_hybrid-midas-501f0c75.pt) has 123 M parameters, too big for a test, and
controlnet_aux's `DPTDepthModel(backbone="vitb_rn50_384")` has no size options. So this script (and
only this script) builds a REDUCED DPT-Hybrid with controlnet_aux's own code by monkeypatching two
functions: `dpt_depth._make_encoder` builds timm's hybrid ViT (the builder of `vit_base_resnet50_384`:
ResNetV2 with StdConv2dSame and 'same' stem, HybridEmbed, ViT blocks) smaller — ResNet stages of
(1, 1, 2) blocks with 128/256/512 channels and a 32-channel stem, a ViT of width 128, 6 blocks and
2 heads (64 per head, as the real 768 / 12) whose blocks 2 and 5 feed the neck (the real model's
8 and 11: the last one and three before it) — and `api.load_model` passes `features=64` (real: 256)
to `DPTDepthModel`. Everything else, the reassemble/fusion/head modules, the forward pass and the
file loading (`MidasDetector.from_pretrained(folder)` → `BaseModel.load`), is controlnet_aux's.

The seeded random tensors (midas_inputs.random_midas_state) for that model's parameter names and
shapes are saved as the published file is laid out (a plain state dict) and loaded by the
detector. Stored: the names and shapes (so the test can make the file again; and those of the
real-size model, for the test that the published layout maps), the seeds and sizes,
the raw network output (float32), the depth map and the normal map (bg_th 0.4, A1111's default)
on three seeded pictures at detect resolution = the shorter side (multiples of 64: neither side resizes).
"""

import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.midas import MidasDetector
from controlnet_aux.midas import api as midas_api
from controlnet_aux.midas.midas import blocks, dpt_depth, vit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from midas_inputs import BG_THRESHOLD, PICTURE_SEEDS, PICTURE_SIZES, WEIGHT_SEED, random_midas_state  # noqa: E402
from pidinet_inputs import picture  # noqa: E402

WIDTH, DEPTH, HEADS = 128, 6, 2
NECK = [128, 256, 96, 96]  # ResNet stage 1 and 2 channels, then the two ViT reassemble widths
FUSION = 64


def small_hybrid_vit():
    """timm's vit_base_resnet50_384 builder with smaller sizes."""
    from timm.layers import StdConv2dSame
    from timm.models.resnetv2 import ResNetV2
    from timm.models.vision_transformer_hybrid import _create_vision_transformer_hybrid

    backbone = ResNetV2(layers=(1, 1, 2), channels=(128, 256, 512), stem_chs=32, num_classes=0, global_pool="",
                        in_chans=3, preact=False, stem_type="same", conv_layer=partial(StdConv2dSame, eps=1e-8))
    return _create_vision_transformer_hybrid("vit_base_r50_s16_384", backbone=backbone, pretrained=False,
                                             embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS)


def small_encoder(backbone, features, use_pretrained, groups=1, expand=False, exportable=True, hooks=None,
                  use_vit_only=False, use_readout="ignore"):
    assert backbone == "vitb_rn50_384"
    pretrained = vit._make_vit_b_rn50_backbone(small_hybrid_vit(), features=NECK, size=[384, 384],
                                               hooks=[0, 1, DEPTH - 4, DEPTH - 1], vit_features=WIDTH,
                                               use_vit_only=use_vit_only, use_readout=use_readout)
    return pretrained, blocks._make_scratch(NECK, features, groups=groups, expand=expand)


def small_load_model(model_type, model_path=None):
    assert model_type == "dpt_hybrid"
    model = dpt_depth.DPTDepthModel(path=model_path, backbone="vitb_rn50_384", non_negative=True, features=FUSION)
    return model.eval(), None


def published_shapes() -> dict:
    """The parameter names and shapes of the real-size DPT-Hybrid, the layout of the published file."""
    with torch.device("meta"):
        model = dpt_depth.DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def main():
    real = published_shapes()
    dpt_depth._make_encoder = small_encoder
    midas_api.load_model = small_load_model
    shapes = {k: tuple(v.shape) for k, v in small_load_model("dpt_hybrid")[0].state_dict().items()}
    names = sorted(shapes)
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES), "bg_threshold": np.array(BG_THRESHOLD),
           "state_names": np.array(names), "state_shapes": np.array([",".join(map(str, shapes[n])) for n in names]),
           "published_names": np.array(sorted(real)),
           "published_shapes": np.array([",".join(map(str, real[n])) for n in sorted(real)])}
    with tempfile.TemporaryDirectory() as folder:
        torch.save(random_midas_state(shapes, WEIGHT_SEED), Path(folder) / "dpt_hybrid-midas-501f0c75.pt")
        detector = MidasDetector.from_pretrained(folder)
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        depth, normal = detector(image, bg_th=BG_THRESHOLD, depth_and_normal=True, detect_resolution=res,
                                 image_resolution=res, output_type="np")
        out[f"depth_{i}"] = depth[:, :, 0]
        out[f"normal_{i}"] = normal
        with torch.no_grad():  # the network's output, as the detector feeds it
            x = torch.from_numpy(image.copy()).float() / 127.5 - 1.0
            out[f"raw_{i}"] = detector.model(x.permute(2, 0, 1)[None])[0].numpy().astype(np.float32)
        print(i, out[f"raw_{i}"].min(), out[f"raw_{i}"].max(), (out[f"raw_{i}"] == 0).mean(),
              len(np.unique(depth)), (normal[:, :, 2] != 127).mean())
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "midas_reference.npz", **out)


if __name__ == "__main__":
    main()
