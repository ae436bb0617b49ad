"""TF layout transforms and SAME padding, proven by porting a frozen TF net and running both."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import porter
from porter.mapping.layouts_tf import (
    batchnorm_epsilons,
    dense_to_linear,
    depthwise_to_oihw,
    hwio_to_oihw,
    nchw_to_nhwc,
    nhwc_to_nchw,
    oihw_to_hwio,
)
from porter.mapping.recipe import Recipe
from porter.mapping.tf_padding import TFSamePad2d, same_padding
from porter.verification.runtimes.child import ChildRuntime


def test_same_padding_matches_tf_rule():
    # TF: out = ceil(n/s); total = max((out-1)*s + (k-1)*d + 1 - n, 0); extra goes at the end
    assert same_padding(17, 3, 2) == (1, 1)
    assert same_padding(16, 3, 2) == (0, 1)
    assert same_padding(10, 2, 2) == (0, 0)
    assert same_padding(9, 2, 2) == (0, 1)
    assert same_padding(7, 3, 1, dilation=2) == (2, 2)
    assert same_padding(5, 4, 1) == (1, 2)


def test_layout_round_trips_and_shapes():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(3, 5, 4, 6)).astype(np.float32)
    assert hwio_to_oihw(k).shape == (6, 4, 3, 5)
    np.testing.assert_array_equal(oihw_to_hwio(hwio_to_oihw(k)), k)
    assert hwio_to_oihw(k)[2, 1, 0, 4] == k[0, 4, 1, 2]
    dw = depthwise_to_oihw(k)  # in=4, mult=6 -> 24 output channels
    assert dw.shape == (24, 1, 3, 5) and dw[2 * 6 + 5, 0, 1, 3] == k[1, 3, 2, 5]
    x = rng.normal(size=(2, 3, 4, 5))
    np.testing.assert_array_equal(nhwc_to_nchw(nchw_to_nhwc(x)), x)
    assert dense_to_linear(np.zeros((16, 5))).shape == (5, 16)


class FrozenNet(nn.Module):
    """Clean torch twin of scripts/build_tf1_fixtures.py:build_frozen."""

    def __init__(self, eps: float) -> None:
        super().__init__()
        self.pad1 = TFSamePad2d(3, 2)
        self.conv1 = nn.Conv2d(3, 8, 3, 2, bias=False)
        self.bn = nn.BatchNorm2d(8, eps=eps)
        self.pad2 = TFSamePad2d(3, 1)
        self.dw = nn.Conv2d(8, 16, 3, groups=8, bias=False)
        self.pool_pad = TFSamePad2d(3, 2, value=float("-inf"))
        self.pool = nn.MaxPool2d(3, 2)
        self.register_buffer("shift_half", torch.zeros(16))
        self.register_buffer("shift_bf", torch.zeros(16))
        self.register_buffer("shift_fill", torch.zeros(16))
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.relu(self.bn(self.conv1(self.pad1(x))))
        y = self.pool(self.pool_pad(self.dw(self.pad2(y))))
        y = y + self.shift_half[:, None, None] + self.shift_bf[:, None, None] \
            + self.shift_fill[:, None, None]
        logits = self.fc(y.mean((2, 3)))
        return logits, logits.softmax(-1)


def _to_f32(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


RECIPE = Recipe("frozen_fixture", rules=[
    (r"^c1/w$", "conv1.weight", hwio_to_oihw),
    (r"^bn/gamma$", "bn.weight"),
    (r"^bn/beta$", "bn.bias"),
    (r"^bn/moving_mean$", "bn.running_mean"),
    (r"^bn/moving_variance$", "bn.running_var"),
    (r"^dw/w$", "dw.weight", depthwise_to_oihw),
    (r"^half$", "shift_half", _to_f32),
    (r"^bf$", "shift_bf", _to_f32),
    (r"^fill$", "shift_fill"),
    (r"^fc/kernel$", "fc.weight", dense_to_linear),
    (r"^fc/bias$", "fc.bias"),
], fill={r"num_batches_tracked$": lambda shape: np.zeros(shape, np.int64)})


def test_frozen_net_ported_with_layouts_matches_tensorflow(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["frozen"]["path"])
    eps = batchnorm_epsilons(src.graph)
    assert list(eps) == ["bn/FusedBatchNorm"] and eps["bn/FusedBatchNorm"] == float(
        np.float32(0.0123))
    net = FrozenNet(eps["bn/FusedBatchNorm"])
    state, report = RECIPE.apply(src.tensors, net)
    net.load_state_dict(state)
    net.eval()
    assert report.counts()["mapped"] == 11
    with ChildRuntime("porter.verification.runtimes.tf1:frozen", {
            "graph": exp["frozen"]["path"], "inputs": {"x": "input:0"},
            "outputs": {"logits": "logits:0", "prob": "prob"}}) as tf_run:
        for seed, shape in enumerate([(1, 3, 17, 23), (2, 3, 32, 32), (1, 3, 9, 14)]):
            x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
            ref = tf_run({"x": x})
            with torch.no_grad():
                logits, prob = net(torch.from_numpy(x))
            assert np.abs(ref["logits"] - logits.numpy()).max() < 1e-5, shape
            assert np.abs(ref["prob"] - prob.numpy()).max() < 1e-6, shape
    # the runner saw NHWC: the stored TF run on the same NHWC input agrees with it
    x_nhwc, logits_tf, _ = exp["frozen"]["runs"][0]
    with torch.no_grad():
        ours = net(torch.from_numpy(nhwc_to_nchw(x_nhwc)))[0].numpy()
    assert np.abs(ours - logits_tf).max() < 1e-5


@pytest.mark.parametrize("n,k,s", [(16, 3, 2), (17, 3, 2), (9, 2, 2), (5, 4, 1)])
def test_same_pad_module_output_size(n, k, s):
    x = torch.zeros(1, 1, n, n)
    y = nn.functional.conv2d(TFSamePad2d(k, s)(x), torch.zeros(1, 1, k, k), stride=s)
    assert y.shape[-1] == -(-n // s)  # TF's SAME output size: ceil(n / s)
