"""Issue 11, "Why" 9: MODNet's preprocessing contract (mean/std 0.5, sizes in multiples of 32) is
data, recorded in the manifest, and what ``preprocess`` does, so an odd-sized picture works."""

from __future__ import annotations

import numpy as np
import torch

from porter.graphs.modnet import PREPROCESSING, MODNet, preprocess


def test_odd_sized_picture_follows_the_contract_and_runs():
    rgb = np.random.default_rng(0).integers(0, 256, (333, 500, 3), dtype=np.uint8)
    x = preprocess(rgb)
    m = PREPROCESSING["size_multiple"]
    assert x.shape[:2] == (1, 3) and x.shape[2] % m == 0 and x.shape[3] % m == 0
    assert tuple(x.shape[2:]) == (320, 512)
    # mean/std from the contract: pure white maps to (1 - mean) / std, black to -mean / std
    white, black = preprocess(np.full((64, 64, 3), 255, np.uint8)), preprocess(
        np.zeros((64, 64, 3), np.uint8))
    mean, std = np.array(PREPROCESSING["mean"]), np.array(PREPROCESSING["std"])
    assert np.allclose(white[0, :, 0, 0].numpy(), (1 - mean) / std)
    assert np.allclose(black[0, :, 0, 0].numpy(), -mean / std)
    with torch.no_grad():
        alpha = MODNet().eval()(x)
    assert alpha.shape == (1, 1, 320, 512)
