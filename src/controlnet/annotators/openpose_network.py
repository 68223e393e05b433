"""The three OpenPose networks (CMU), with the flat layer names of the published weight files.

`body_pose_model.pth` (COCO-18 body: 38 PAF channels, 19 heatmaps), `hand_pose_model.pth` (22
heatmaps) and `facenet.pth` (71 heatmaps) all hold one tensor per conv named `conv1_1.weight`,
`Mconv3_stage4_L2.bias` and so on, so each network registers its convs under those names. All
three share a VGG-19 front and refine their maps through 7×7 stages fed with the front's features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

POOL = None  # a 2×2 max pool in a layer list
VGG_FRONT = [("conv1_1", 3, 64, 3), ("conv1_2", 64, 64, 3), POOL, ("conv2_1", 64, 128, 3), ("conv2_2", 128, 128, 3),
             POOL, ("conv3_1", 128, 256, 3), ("conv3_2", 256, 256, 3), ("conv3_3", 256, 256, 3),
             ("conv3_4", 256, 256, 3), POOL, ("conv4_1", 256, 512, 3), ("conv4_2", 512, 512, 3)]
# hand and face continue the front the same way (the face file's conv4_3..conv5_3_CPM match the hand's)
PART_FRONT = VGG_FRONT + [("conv4_3", 512, 512, 3), ("conv4_4", 512, 512, 3), ("conv5_1", 512, 512, 3),
                          ("conv5_2", 512, 512, 3), ("conv5_3_CPM", 512, 128, 3)]
BODY_FRONT = VGG_FRONT + [("conv4_3_CPM", 512, 256, 3), ("conv4_4_CPM", 256, 128, 3)]


def refinement_stage(stage: int, suffix: str, cin: int, cout: int) -> list:
    """Mconv1..7 of one refinement stage: five 7×7, then two 1×1 convs."""
    names = [f"Mconv{i}_stage{stage}{suffix}" for i in range(1, 8)]
    sizes = [(cin, 128, 7)] + [(128, 128, 7)] * 4 + [(128, 128, 1), (128, cout, 1)]
    return [(name, *size) for name, size in zip(names, sizes)]


class _Cascade(nn.Module):
    """Convs registered under their published names, run as named lists (ReLU after each but the last)."""

    def add(self, layers: list) -> list:
        for layer in layers:
            if layer is not POOL:
                name, cin, cout, kernel = layer
                self.add_module(name, nn.Conv2d(cin, cout, kernel, padding=kernel // 2))
        return layers

    def run(self, x: torch.Tensor, layers: list, relu_last: bool = False) -> torch.Tensor:
        for i, layer in enumerate(layers):
            if layer is POOL:
                x = F.max_pool2d(x, 2, 2)
                continue
            x = getattr(self, layer[0])(x)
            if i < len(layers) - 1 or relu_last:
                x = F.relu(x)
        return x


class BodyPoseNet(_Cascade):
    """COCO-18 body: (part affinity fields 38 channels, heatmaps 19 channels) at 1/8 of the input.

    As in every port of the Caffe model (pytorch-openpose, ControlNet, controlnet_aux), the last
    heatmap conv of stage 6 is followed by a ReLU (its name was listed twice in place of the L2 one).
    """

    def __init__(self):
        super().__init__()
        self.front = self.add(BODY_FRONT)
        self.first = [self.add([(f"conv5_{i}_CPM_L{b}", *size) for i, size in enumerate(
            [(128, 128, 3), (128, 128, 3), (128, 128, 3), (128, 512, 1), (512, out, 1)], start=1)]) for b, out in ((1, 38), (2, 19))]
        self.stages = [[self.add(refinement_stage(s, f"_L{b}", 185, out)) for b, out in ((1, 38), (2, 19))] for s in range(2, 7)]

    def forward(self, x):
        features = self.run(x, self.front, relu_last=True)
        pafs, heat = (self.run(features, layers) for layers in self.first)
        for s, (paf_layers, heat_layers) in enumerate(self.stages, start=2):
            both = torch.cat([pafs, heat, features], 1)
            pafs, heat = self.run(both, paf_layers), self.run(both, heat_layers, relu_last=s == 6)
        return pafs, heat


class _PartNet(_Cascade):
    """Hand (22 maps) and face (71 maps): a 1×1 head, then five refinement stages."""

    def __init__(self, maps: int):
        super().__init__()
        self.front = self.add(PART_FRONT)
        self.head = self.add([("conv6_1_CPM", 128, 512, 1), ("conv6_2_CPM", 512, maps, 1)])
        self.stages = [self.add(refinement_stage(s, "", 128 + maps, maps)) for s in range(2, 7)]

    def forward(self, x):
        features = self.run(x, self.front, relu_last=True)
        maps = self.run(features, self.head)
        for layers in self.stages:
            maps = self.run(torch.cat([maps, features], 1), layers)
        return maps


class HandPoseNet(_PartNet):
    def __init__(self):
        super().__init__(22)


class FaceNet(_PartNet):
    def __init__(self):
        super().__init__(71)
