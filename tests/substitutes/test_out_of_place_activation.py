"""out_of_place_activation: same outputs, input left untouched, no mutating op in the graph."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from porter.substitutes import apply_substitutes
from porter.substitutes.out_of_place_activation import INPLACE_ACTIVATIONS

SHAPES = [(1, 3, 8, 8), (2, 16, 33, 17), (1, 48, 64, 64)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _make(cls: type[nn.Module]) -> nn.Module:
    if cls is nn.Threshold:
        return cls(0.1, -1.0, inplace=True)
    return cls(inplace=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cls", INPLACE_ACTIVATIONS, ids=lambda c: c.__name__)
def test_same_output_and_input_kept(cls: type[nn.Module], shape: tuple[int, ...],
                                    dtype: torch.dtype) -> None:
    original = nn.Sequential(_make(cls)).eval()
    rewritten, records = apply_substitutes(original, ["out_of_place_activation"])
    assert [(r["module"], r["rule"]) for r in records] == [("0", "out_of_place_activation")]
    assert rewritten[0].inplace is False and original[0].inplace is True
    gen = torch.Generator().manual_seed(sum(shape))
    x = (torch.randn(shape, generator=gen) * 4).to(dtype)
    x_before = x.clone()
    with torch.no_grad():
        got = rewritten(x)
        want = original(x.clone())
    assert torch.equal(x, x_before)
    assert got.data_ptr() != x.data_ptr()
    assert (got.float() - want.float()).abs().max().item() == 0.0


def test_graph_loses_mutating_ops() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.ReLU6(inplace=True),
                          nn.Hardswish(inplace=True))
    x = torch.randn(1, 3, 8, 8)

    def ops(m: nn.Module) -> list[str]:
        ep = torch.export.export(m.eval(), (x,))
        return [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]

    before = ops(model)
    after = ops(apply_substitutes(model, ["out_of_place_activation"])[0])
    assert {"aten.relu_.default", "aten.hardtanh_.default", "aten.hardswish_.default"} <= set(
        before)
    assert [o for o in after if o.endswith("_.default")] == []
    assert {"aten.relu.default", "aten.hardtanh.default", "aten.hardswish.default"} <= set(after)
