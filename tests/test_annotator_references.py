"""Post-processing that must follow the references (ControlNet 1.1, A1111, controlnet_aux)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from controlnet.annotators import annotate
from controlnet.annotators.depth import metric_depth_to_gray, relative_depth_to_gray
from controlnet.annotators.image import pad_to_multiple

DATA = Path(__file__).parent / "data"


def test_metric_depth_maps_the_2nd_to_85th_percentile_like_the_references():
    distance = np.random.default_rng(0).gamma(2.0, 1.5, size=(80, 120)).astype(np.float32) + 0.5
    out = metric_depth_to_gray(distance)
    low, high = np.percentile(distance, 2), np.percentile(distance, 85)
    expected = ((1.0 - (distance - low) / (high - low)) * 255.0).clip(0, 255).astype(np.uint8)
    assert np.array_equal(out, expected)
    black = (out == 0).mean()
    assert 0.14 <= black <= 0.16, f"the farthest ~15% must be black, got {black:.1%}"
    assert (out == 255).mean() >= 0.02, "the nearest 2% is clipped to white"
    assert (relative_depth_to_gray(-distance) == 0).mean() < 0.01, "min-max would leave almost nothing black"


def test_metric_depth_matches_controlnet_aux_zoe_output():
    reference = np.load(DATA / "zoe_reference.npz")  # made by tests/data/make_zoe_reference.py
    assert np.array_equal(metric_depth_to_gray(reference["distance"]), reference["image"])


def test_flat_metric_depth_is_a_flat_map_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = metric_depth_to_gray(np.full((8, 8), 3.0, np.float32))
    assert out.dtype == np.uint8 and not out.any()


def test_lineart_pads_to_64_with_edge_padding_then_crops(tmp_path):
    from controlnet.annotators.lineart_network import LineartGenerator

    torch.manual_seed(0)
    net = LineartGenerator().eval()
    torch.save(net.state_dict(), tmp_path / "sk_model.pth")
    image = (np.random.default_rng(1).random((72, 88, 3)) * 255).astype(np.uint8)  # not multiples of 64
    padded, (h, w) = pad_to_multiple(image, 64)
    assert padded.shape[:2] == (128, 128) and (h, w) == (72, 88)
    assert np.array_equal(padded[71:, :88], np.repeat(image[71:72], 128 - 71, axis=0))
    out = annotate("lineart", image, resolution=72, model=tmp_path)
    with torch.no_grad():
        line = net(torch.from_numpy(padded).float().permute(2, 0, 1)[None] / 255.0)[0, 0].numpy()[:h, :w]
    expected = 255 - (line * 255).clip(0, 255).astype(np.uint8)
    assert out.shape == (72, 88, 3)
    assert np.abs(out[:, :, 0].astype(int) - expected).max() <= 1
