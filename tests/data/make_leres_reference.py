"""How tests/data/leres_reference.npz was made: controlnet_aux 0.0.10's LeresDetector on random weights.

Run OUTSIDE the project, in an environment of its own (controlnet_aux is not a dependency):

    python3 -m venv /tmp/auxenv
    /tmp/auxenv/bin/pip install torch==2.14.1 torchvision==0.29.1   # CPU run
    /tmp/auxenv/bin/pip install controlnet-aux==0.0.10
    /tmp/auxenv/bin/python tests/data/make_leres_reference.py

The networks are REDUCED (sizes in leres_inputs.py) with controlnet_aux's own classes: its `ResNet` of
`Bottleneck`s with fewer blocks and groups in place of `resnext101_32x8d`, its Decoder's FTB / FFM / AO
modules rebuilt narrower, and its pix2pix `define_G(..., "unet_1024", ...)` called with base width 8.
Their seeded random tensors are saved as the published files are laid out (res101.pth:
{"depth_model": {"module.<name>": tensor}}; latest_net_G.pth: the generator's state dict), and loaded
by `LeresDetector.from_pretrained(folder)` (its own strict loading). Stored: the names and shapes of
both states (the test makes the same files from them), the seeds, the raw depth (`estimateleres` at the
picture's size, and `estimateboost`, both as the detector calls them) and the maps of `depth_leres`
(boost=False) and `depth_leres++` (boost=True; one channel of each grey map) with the thresholds of leres_inputs.THRESHOLDS, on three
seeded pictures (leres_inputs.leres_picture) at detect resolution = the shorter side.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from controlnet_aux import leres as aux_leres
from controlnet_aux.leres.leres import Resnext_torch, network_auxi
from controlnet_aux.leres.leres.depthmap import estimateboost, estimateleres
from controlnet_aux.leres.leres.multi_depth_model_woauxi import RelDepthModel
from controlnet_aux.leres.pix2pix.models import networks
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from leres_inputs import (  # noqa: E402
    BLOCKS,
    GROUP_WIDTH,
    GROUPS,
    MERGE_SEED,
    MERGE_WIDTH,
    MID,
    PICTURE_SEEDS,
    PICTURE_SIZES,
    THRESHOLDS,
    TOP,
    WEIGHT_SEED,
    leres_picture,
    published_layout,
    random_leres_state,
)
from pidinet_inputs import random_state  # noqa: E402

REAL_DEFINE_G = networks.define_G


def reduced_resnext(pretrained=False):
    return Resnext_torch.ResNet(Resnext_torch.Bottleneck, list(BLOCKS), groups=GROUPS, width_per_group=GROUP_WIDTH)


def reduced_model(backbone="resnext101"):
    model = RelDepthModel(backbone=backbone)
    decoder = model.depth_model.decoder_modules
    decoder.conv = network_auxi.FTB(inchannels=2048, midchannels=TOP)
    decoder.conv1 = nn.Conv2d(TOP, MID, kernel_size=3, padding=1, stride=1, bias=True)
    decoder.ffm2 = network_auxi.FFM(inchannels=1024, midchannels=MID, outchannels=MID, upfactor=2)
    decoder.ffm1 = network_auxi.FFM(inchannels=512, midchannels=MID, outchannels=MID, upfactor=2)
    decoder.ffm0 = network_auxi.FFM(inchannels=256, midchannels=MID, outchannels=MID, upfactor=2)
    decoder.outconv = network_auxi.AO(inchannels=MID, outchannels=1, upfactor=2)
    return model


def reduced_define_g(input_nc, output_nc, ngf, net_g, *args, **kwargs):
    assert (ngf, net_g) == (64, "unet_1024")
    return REAL_DEFINE_G(input_nc, output_nc, MERGE_WIDTH, net_g, *args, **kwargs)


RAW = []


def recording(estimate):
    """`estimate` (estimateleres or estimateboost as the detector calls them), its result kept in RAW."""
    def run(*args, **kwargs):
        RAW.append(estimate(*args, **kwargs))
        return RAW[-1]
    return run


def shapes_of(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def main():
    Resnext_torch.resnext101_32x8d = reduced_resnext
    aux_leres.RelDepthModel = reduced_model
    networks.define_G = reduced_define_g
    aux_leres.estimateleres, aux_leres.estimateboost = recording(estimateleres), recording(estimateboost)
    depth_shapes = shapes_of(reduced_model().state_dict())
    merge_shapes = shapes_of(networks.define_G(2, 1, 64, "unet_1024", "none", False, "normal", 0.02, []).state_dict())
    out = {"weight_seed": np.array(WEIGHT_SEED), "merge_seed": np.array(MERGE_SEED),
           "picture_seeds": np.array(PICTURE_SEEDS), "picture_sizes": np.array(PICTURE_SIZES),
           "thresholds": np.array(THRESHOLDS)}
    for kind, shapes in (("depth", depth_shapes), ("merge", merge_shapes)):
        out[f"{kind}_names"] = np.array(list(shapes))
        out[f"{kind}_shapes"] = np.array([",".join(map(str, s)) for s in shapes.values()])
    with tempfile.TemporaryDirectory() as folder:
        torch.save(published_layout(random_leres_state(depth_shapes, WEIGHT_SEED)), Path(folder) / "res101.pth")
        torch.save(random_state(merge_shapes, MERGE_SEED), Path(folder) / "latest_net_G.pth")
        detector = aux_leres.LeresDetector.from_pretrained(folder)
    for i, size in enumerate(PICTURE_SIZES):
        image = leres_picture(i)
        res = min(size)
        near, background = THRESHOLDS[i]
        for name, boost in (("leres", False), ("leres_boost", True)):
            grey3 = detector(image, thr_a=near, thr_b=background, boost=boost, detect_resolution=res,
                             image_resolution=res, output_type="np")
            assert (grey3 == grey3[:, :, :1]).all()
            out[f"{name}_{i}"] = grey3[:, :, 0]  # one channel of the grey map
            out[f"raw_{name}_{i}"] = RAW.pop()  # the depth the detector computed, before its map
    out["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(HERE / "leres_reference.npz", **out)


if __name__ == "__main__":
    main()
