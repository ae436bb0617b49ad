"""instance_norm substitute: ManualInstanceNorm matches nn.InstanceNorm over shapes and dtypes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from porter.substitutes import ManualInstanceNorm2d, apply_substitutes
from porter.verification.npu import audit_module, load_registry

SHAPES_2D = [(1, 3, 8, 8), (2, 16, 33, 17), (1, 48, 64, 64)]
SHAPES_1D = [(1, 3, 8), (2, 16, 257)]
SHAPES_3D = [(1, 3, 4, 8, 8), (2, 5, 3, 9, 7)]
NORMS = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


def _norm_pair(dims: int, channels: int, affine: bool, seed: int) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    ref = NORMS[dims](channels, eps=1e-5, affine=affine)
    if affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
    sub, records = apply_substitutes(nn.Sequential(ref), ["instance_norm"])
    assert [r["module"] for r in records] == ["0"]
    return ref, sub[0]


def _input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # an offset and a scale per channel, so mean removal and variance both matter
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    scale = torch.rand((1, shape[1]) + (1,) * (len(shape) - 2), generator=gen,
                       dtype=torch.float64)
    return x * (0.5 + 3 * scale) + 2 * scale


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dims,shape", [(2, s) for s in SHAPES_2D] + [(1, s) for s in SHAPES_1D]
                         + [(3, s) for s in SHAPES_3D])
def test_matches_instance_norm_fp32(dims: int, shape: tuple[int, ...], affine: bool) -> None:
    ref, sub = _norm_pair(dims, shape[1], affine, seed=len(shape))
    x = _input(shape, seed=sum(shape)).float()
    with torch.no_grad():
        want, got = ref(x), sub(x)
    assert type(sub).__name__ == f"ManualInstanceNorm{dims}d"
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_matches_float64_reference(shape: tuple[int, ...], affine: bool) -> None:
    ref, sub = _norm_pair(2, shape[1], affine, seed=7)
    x = _input(shape, seed=3)
    with torch.no_grad():
        want, got = ref.double()(x), sub.double()(x)
    assert (got - want).abs().max().item() < 1e-12


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("shape", SHAPES_2D)
def test_low_precision_within_one_ulp(shape: tuple[int, ...], affine: bool,
                                      dtype: torch.dtype) -> None:
    """Statistics in float32, one rounding at the end: error <= 1 ulp of the largest output."""
    ref, sub = _norm_pair(2, shape[1], affine, seed=11)
    x = _input(shape, seed=5).to(dtype)
    with torch.no_grad():
        want = ref.double()(x.double())
        got = sub.to(dtype)(x)
    assert got.dtype == dtype
    bound = torch.finfo(dtype).eps * want.abs().max().item()
    assert (got.double() - want).abs().max().item() <= bound


def test_state_dict_keys_and_values_unchanged() -> None:
    ref, sub = _norm_pair(2, 16, affine=True, seed=1)
    assert list(sub.state_dict()) == list(ref.state_dict()) == ["weight", "bias"]
    for key, value in ref.state_dict().items():
        assert torch.equal(sub.state_dict()[key], value)
    plain, sub_plain = _norm_pair(2, 16, affine=False, seed=1)
    assert list(sub_plain.state_dict()) == list(plain.state_dict()) == []
    fresh = ManualInstanceNorm2d(16, affine=True)
    fresh.load_state_dict(ref.state_dict())
    x = _input((2, 16, 9, 9), seed=2).float()
    assert (fresh(x) - ref(x)).abs().max().item() < 1e-5


def test_running_stats_instance_norm_is_left_alone() -> None:
    model = nn.Sequential(nn.InstanceNorm2d(4, track_running_stats=True))
    out, records = apply_substitutes(model, ["instance_norm"])
    assert records == [] and type(out[0]) is nn.InstanceNorm2d


def _graph_ops(module: nn.Module, x: torch.Tensor) -> set[str]:
    ep = torch.export.export(module.eval(), (x,))
    return {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}


def test_export_and_audit_before_and_after() -> None:
    """Plain InstanceNorm2d exports to aten.instance_norm (no torch_npu kernel, but composite:
    it reaches native_batch_norm, which torch_npu has); the substitute uses neither."""
    x = _input((1, 8, 16, 16), seed=9).float()
    plain = nn.Sequential(nn.InstanceNorm2d(8, affine=False))
    assert "aten.instance_norm.default" in _graph_ops(plain, x)
    registry = load_registry()
    assert not registry.has_kernel("aten::instance_norm")
    assert registry.has_kernel("aten::native_batch_norm")
    report = audit_module(plain, (x,), registry=registry)
    (entry,) = [o for o in report["ops"] if o["op"] == "aten::instance_norm"]
    assert entry["status"] == "decomposed" and entry["kernel"] == "CompositeImplicitAutograd"
    assert "aten::native_batch_norm" in entry["via"] and report["passed"]

    sub, _ = apply_substitutes(plain, ["instance_norm"])
    ops = _graph_ops(sub, x)
    assert not {o for o in ops if "norm" in o}
    assert (sub(x) - plain(x)).abs().max().item() < 1e-5
