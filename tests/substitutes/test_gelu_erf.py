"""gelu_erf: ErfGELU equals nn.GELU over shapes and dtypes; only exact GELUs are replaced."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from porter.substitutes import apply_substitutes
from porter.substitutes.gelu_erf import ErfGELU


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12),
                                       (torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5, 5), (4, 33, 16)])
def test_erf_gelu_matches_gelu(dtype, tol, shape):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(0)) * 4).to(dtype)
    ref = nn.GELU()(x)
    out = ErfGELU()(x)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert (out.double() - ref.double()).abs().max().item() <= tol * max(1.0, ref.abs().max().item())


def test_rewrite_replaces_exact_gelu_only():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Sequential(nn.GELU(approximate="tanh")))
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    new, records = apply_substitutes(model, ["gelu_erf"])
    assert [r["module"] for r in records] == ["1"]
    assert isinstance(new[1], ErfGELU) and type(new[2][0]) is nn.GELU
    assert type(model[1]) is nn.GELU  # the original is untouched (a copy was rewritten)
    assert torch.allclose(new(x), model(x), atol=1e-6, rtol=0)
