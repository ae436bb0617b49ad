"""float32_only: parameters and buffers become float32; a forward making float64 is refused."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from porter.errors import PorterError
from porter.substitutes import apply_substitutes, check_float32_forward


def _mixed_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 4, 1))
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    model[0].double()
    model[3].half()
    return model.eval()


def _reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.double()(x.double())


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 33, 17), (1, 3, 64, 64)])
def test_converts_and_matches_float64_reference(shape: tuple[int, ...]) -> None:
    model = _mixed_model()
    x = torch.randn(shape)
    rewritten, records = apply_substitutes(model, ["float32_only"], example_inputs=(x,))
    assert {(r["module"], r["tensor"], r["replaced"]) for r in records} == {
        ("0", "weight", "float64"), ("0", "bias", "float64"),
        ("3", "weight", "float16"), ("3", "bias", "float16")}
    for name, tensor in rewritten.state_dict().items():
        want = torch.int64 if name.endswith("num_batches_tracked") else torch.float32
        assert tensor.dtype == want, name
    assert list(rewritten.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        got = rewritten(x)
        want = _reference(_mixed_model(), x)
    assert got.dtype == torch.float32
    # the reference holds the same (already rounded) weights in float64: only float32 rounding
    assert (got.double() - want).abs().max().item() < 1e-5


class _MakesDouble(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.tensor(0.5, dtype=torch.float64)


def test_refuses_forward_that_still_makes_float64() -> None:
    x = torch.randn(1, 3, 4, 4)
    with pytest.raises(PorterError, match="float64.*aten"):
        apply_substitutes(_MakesDouble(), ["float32_only"], example_inputs=(x,))
    check_float32_forward(nn.Conv2d(3, 3, 1), (x,))  # a clean module passes silently
    out = nn.Conv2d(3, 3, 1)(x)
    assert out.dtype == torch.float32
