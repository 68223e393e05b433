"""How tests/data/dwpose_*.onnx were made: small stand-ins for DWPose's two published ONNX files.

The real files cannot be fetched here, so these have the same input and output names and shapes,
seeded random weights, and only the operators both OpenCV's DNN module and onnxruntime run:
- dwpose_yolox_tiny.onnx ~ yolox_l.onnx: input `images` (1, 3, 640, 640) float 0..255, output `output`
  (1, 8400, 85): per cell of the 80/40/20 grids, raw x, y offsets and log sizes, then objectness and 80
  class scores after a sigmoid (YOLOX's export without decoding);
- dwpose_rtmpose_tiny.onnx ~ dw-ll_ucoco_384.onnx: input `input` (1, 3, 384, 288) normalised, outputs
  `simcc_x` (1, 133, 576) and `simcc_y` (1, 133, 768);
- dwpose_yolox_topk.onnx: the detector with a TopK node on its scores, as newer exports have (older
  OpenCV releases refuse it).
Biases are set so that a few boxes pass the detector's thresholds and about half the keypoints the
0.3 score. Run with the project's venv and the `onnx` package (torch's exporter needs it):

    pip install onnx && python tests/data/make_dwpose_models.py
"""

from pathlib import Path

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 2307  # arXiv 2307.15880


class TinyYolox(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 8, stride=8)
        self.heads = nn.ModuleList(nn.Conv2d(8, 85, 1) for _ in range(3))
        self.pool = nn.AvgPool2d(2)

    def forward(self, images):
        features = torch.relu(self.stem(images / 255.0))
        levels = []
        for head in self.heads:
            out = head(features)
            levels.append(torch.cat([out[:, :4], torch.sigmoid(out[:, 4:])], 1).flatten(2))
            features = self.pool(features)
        return torch.cat(levels, 2).permute(0, 2, 1)


class TopKYolox(TinyYolox):
    def forward(self, images):
        out = super().forward(images)
        _, index = torch.topk(out[:, :, 4], 8400, dim=1)
        return out[:, index[0]]


class TinyRTMPose(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 8, stride=8)
        self.pool = nn.AvgPool2d(4)
        self.to_x, self.to_y = nn.Conv1d(16, 133, 1), nn.Conv1d(16, 133, 1)
        self.up_x, self.up_y = nn.Linear(9, 576), nn.Linear(12, 768)

    def forward(self, x):
        features = self.pool(torch.relu(self.stem(x)))  # (1, 16, 12, 9)
        simcc_x = self.up_x(self.to_x(features.mean(2)))
        simcc_y = self.up_y(self.to_y(features.mean(3)))
        return simcc_x, simcc_y


def seeded(net: nn.Module) -> nn.Module:
    torch.manual_seed(SEED)
    for p in net.parameters():
        nn.init.normal_(p, 0.0, 0.5 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1)
    return net.eval()


def yolox() -> TinyYolox:
    net = seeded(TinyYolox())
    with torch.no_grad():
        for level, head in enumerate(net.heads):
            head.weight[4:] *= 12.0  # objectness and classes spread wide, so a few cells pass 0.3
            head.weight[4:6] *= 2.5
            head.bias[4], head.bias[5] = 1.0, -4.0  # objectness, person
            head.bias[6:] -= 4.0
            head.bias[2:4] += 1.0 + 0.3 * level  # log box sizes: about 3-5 cells
            head.weight[2:4] *= 0.2
    return net


def rtmpose() -> TinyRTMPose:
    net = seeded(TinyRTMPose())
    with torch.no_grad():
        for up in (net.up_x, net.up_y):
            up.weight *= 4.0
            up.bias -= 0.2  # about half the keypoints score 0.3 or more
    return net


def export(net: nn.Module, shape, path: Path, inputs, outputs) -> None:
    torch.onnx.export(net, torch.zeros(shape), str(path), input_names=inputs, output_names=outputs,
                      opset_version=11, dynamo=False)
    print(path.name, path.stat().st_size, "bytes")


def main(folder: Path = HERE) -> None:
    export(yolox(), (1, 3, 640, 640), folder / "dwpose_yolox_tiny.onnx", ["images"], ["output"])
    topk = TopKYolox()
    topk.load_state_dict(yolox().state_dict())
    export(topk.eval(), (1, 3, 640, 640), folder / "dwpose_yolox_topk.onnx", ["images"], ["output"])
    export(rtmpose(), (1, 3, 384, 288), folder / "dwpose_rtmpose_tiny.onnx", ["input"], ["simcc_x", "simcc_y"])


if __name__ == "__main__":
    main()
