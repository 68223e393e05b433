"""How tests/data/zoe_depth_reference.npz was made: controlnet_aux 0.0.10's ZoeDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run (timm 1.0.31 comes with it)
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_zoe_depth_reference.py

The real ZoeD_M12_N.pt (ZoeDepth-N: MiDaS 3.1 DPT on BEiT-L/16 384, 345 M parameters) is too big for a
test, so this script (and only this script) builds a REDUCED ZoeDepth with controlnet_aux's own code:
the BEiT keeps 24 blocks (so the neck reads blocks 5, 11, 17, 23, as the real one) but has width 64 and
2 heads (real: 1024, 16), the reassemble widths are [24, 32, 48, 64] (real: 256, 512, 1024, 1024) and
the fusion width 32 (real: 256); the metric head (64 bins, 128-wide bin embeddings, attractors
16/8/4/1, log-binomial output) is the real configuration. Patched for that: `dpt_depth._make_encoder` (timm's
beit_large_patch16_384 with the smaller sizes, then controlnet_aux's `_make_beit_backbone` and `_make_scratch`),
`torch.hub.load` of the MiDaS repo (gives controlnet_aux's `DPTDepthModel(backbone="beitl16_384",
non_negative=True, features=32)`) and MIDAS_SETTINGS (the channels the Zoe head reads). Everything
else, ZoeDepth.build_from_config(get_config("zoedepth", "infer")), the forward pass with its padding,
384x512 resize, flip averaging, and the detector's percentile map, is controlnet_aux's.

The seeded random tensors (zoe_inputs.random_zoe_state) are loaded into the model directly: the detector's
file loading is non-strict under timm 1.x, so the state is loaded here and the load
checked complete. Stored: the names and shapes of the reduced model's state (so the test can make the
same file) and of the real-size model (for the test that the published layout maps whole), the seeds,
the raw metric depth as `infer` gives it and the depth map, on three seeded pictures at detect
resolution = the shorter side.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from controlnet_aux.zoe import ZoeDetector
from controlnet_aux.zoe.zoedepth.models.base_models import midas as zoe_midas
from controlnet_aux.zoe.zoedepth.models.base_models.midas_repo.midas import blocks, dpt_depth
from controlnet_aux.zoe.zoedepth.models.base_models.midas_repo.midas.backbones import beit
from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
from controlnet_aux.zoe.zoedepth.utils.config import get_config

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from pidinet_inputs import picture  # noqa: E402
from zoe_inputs import PICTURE_SEEDS, PICTURE_SIZES, WEIGHT_SEED, random_zoe_state  # noqa: E402

WIDTH, HEADS = 64, 2
NECK = [24, 32, 48, 64]
FUSION = 32
REAL_ENCODER = dpt_depth._make_encoder


def small_encoder(backbone, features, use_pretrained, groups=1, expand=False, exportable=True, hooks=None,
                  use_vit_only=False, use_readout="ignore", in_features=None):
    import timm

    assert backbone == "beitl16_384" and hooks == [5, 11, 17, 23]
    model = timm.create_model("beit_large_patch16_384", pretrained=False, embed_dim=WIDTH, num_heads=HEADS)
    pretrained = beit._make_beit_backbone(model, features=NECK, hooks=hooks, vit_features=WIDTH, use_readout=use_readout)
    return pretrained, blocks._make_scratch(NECK, features, groups=groups, expand=expand)


def build(small: bool):
    dpt_depth._make_encoder = small_encoder if small else REAL_ENCODER
    features = FUSION if small else 256
    zoe_midas.MIDAS_SETTINGS["DPT_BEiT_L_384"] = [features] * 5
    torch.hub.load = lambda *a, **k: dpt_depth.DPTDepthModel(path=None, backbone="beitl16_384", non_negative=True,
                                                             features=features)
    return ZoeDepth.build_from_config(get_config("zoedepth", "infer")).eval()


def shapes_of(model) -> dict:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def main():
    with torch.device("meta"):
        real = shapes_of(build(small=False))
    model = build(small=True)
    shapes = shapes_of(model)
    state = random_zoe_state({k: s for k, s in shapes.items() if "relative_position_index" not in k}, WEIGHT_SEED)
    missing, unexpected = torch.nn.Module.load_state_dict(model, state, strict=False)
    assert not unexpected and all("relative_position_index" in k for k in missing), (missing, unexpected)
    names = sorted(state)
    out = {"weight_seed": np.array(WEIGHT_SEED), "picture_seeds": np.array(PICTURE_SEEDS),
           "picture_sizes": np.array(PICTURE_SIZES),
           "state_names": np.array(names), "state_shapes": np.array([",".join(map(str, shapes[n])) for n in names]),
           "published_names": np.array(sorted(real)),
           "published_shapes": np.array([",".join(map(str, real[n])) for n in sorted(real)])}
    detector = ZoeDetector(model)
    for i, (seed, size) in enumerate(zip(PICTURE_SEEDS, PICTURE_SIZES)):
        image = picture(seed, size)
        res = min(size)
        out[f"depth_{i}"] = detector(image, detect_resolution=res, image_resolution=res, output_type="np")[:, :, 0]
        with torch.no_grad():
            x = torch.from_numpy(image.copy()).float().permute(2, 0, 1)[None] / 255.0
            out[f"raw_{i}"] = model.infer(x)[0, 0].numpy().astype(np.float32)
        raw = out[f"raw_{i}"]
        print(i, raw.shape, raw.min(), raw.max(), len(np.unique(out[f"depth_{i}"])))
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "zoe_depth_reference.npz", **out)


if __name__ == "__main__":
    main()
