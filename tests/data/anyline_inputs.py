"""Seeded inputs of the Anyline equality test, shared by the test and by make_anyline_reference.py.

MTEED.pth holds TEED's tensors, so the weights are teed_inputs.random_teed_state with a seed of
their own, and the pictures pidinet_inputs.picture with seeds of their own: the repository stores
only the reference maps (anyline_reference.npz).
"""

from __future__ import annotations

WEIGHT_SEED = 9
PICTURE_SEEDS = (111, 222, 333)
PICTURE_SIZES = ((128, 192), (192, 128), (128, 128))  # (h, w): multiples of 64, so no resize on either side
RAW_STRIDE = 4  # the reference keeps every 4th row and column of the mean logit (small test data)
