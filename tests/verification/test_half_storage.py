"""HalfStorage (float16 tensors, float32 arithmetic) against torch's native float16 on the CPU."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from porter.verification.runtimes.half_storage import HalfStorage
from porter.verification.runtimes.torch_ import TorchRunner

GEN = torch.Generator().manual_seed(7)


def _rand(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=GEN).half()


def test_elementwise_ops_equal_native_half_bit_for_bit() -> None:
    """torch's CPU half kernels compute elementwise ops in float32 and round once: the same."""
    a, b = _rand(4, 33), _rand(4, 33)
    with torch.inference_mode():
        native = [torch.sigmoid(a), a * b + a, torch.tanh(a - b), torch.exp(a), a / (b + 1)]
        with HalfStorage():
            emulated = [torch.sigmoid(a), a * b + a, torch.tanh(a - b), torch.exp(a), a / (b + 1)]
    for n, e in zip(native, emulated):
        assert e.dtype == torch.float16
        assert torch.equal(n, e)


def test_convolution_is_float32_arithmetic_rounded_once() -> None:
    x, w = _rand(1, 8, 12, 12), _rand(6, 8, 3, 3) - 0.5
    with torch.inference_mode(), HalfStorage():
        got = nn.functional.conv2d(x, w, padding=1)
    want = nn.functional.conv2d(x.float(), w.float(), padding=1).half()
    assert got.dtype == torch.float16
    assert torch.equal(got, want)
    native = nn.functional.conv2d(x, w, padding=1)  # within a rounding step of torch's own
    np.testing.assert_allclose(got.float().numpy(), native.float().numpy(), rtol=2e-3, atol=2e-3)


class _InPlace(nn.Module):
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x.relu_()
        x[:, :1].mul_(2.0)  # an in-place op on a view writes through to x
        v = x.view(-1)
        v.add_(1.0)
        return torch.cat([x, y.to(torch.float16)], dim=1) + (x.sum() * 0)


def test_in_place_ops_and_views_keep_their_meaning() -> None:
    x, y = _rand(2, 3) - 0.5, torch.rand(2, 2, generator=GEN)
    m = _InPlace()
    with torch.inference_mode():
        native = m(x, y)
        with HalfStorage():
            emulated = m(x, y)
    assert emulated.dtype == torch.float16
    assert torch.equal(native, emulated)


def test_type_promotion_is_left_to_torch() -> None:
    """float16 with a wider tensor promotes as torch decides; a dtype argument is obeyed."""
    h, f = _rand(3, 4), torch.rand(3, 4, generator=GEN)
    with torch.inference_mode(), HalfStorage():
        mixed = h + f
        summed = h.sum(dtype=torch.float32)
        scaled = h * torch.tensor(3.0)  # a 0-dim float32 does not promote
        soft = torch.softmax(h, 1, torch.float32)  # dtype given positionally
    assert mixed.dtype == torch.float32 and torch.equal(mixed, h + f)
    assert summed.dtype == torch.float32
    assert soft.dtype == torch.float32 and torch.equal(soft, torch.softmax(h, 1, torch.float32))
    assert scaled.dtype == torch.float16


def test_torch_runner_runs_float16_under_half_storage() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(4, 1, 1))
    net.eval()
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    full = TorchRunner(net, ["x"], ["y"])({"x": x})["y"]
    half = TorchRunner(copy.deepcopy(net), ["x"], ["y"], dtype=torch.float16)
    got = half({"x": x})["y"]
    assert half.name == "torch-cpu-float16"
    assert got.dtype == np.float32 and got.shape == full.shape
    err = np.abs(got - full).max()
    assert 0 < err < 1e-2  # float16 rounding is visible and small
