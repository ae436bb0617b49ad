"""The NPU audit's two capture methods: torch.export, and the ATen ops a real forward dispatches."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from porter.errors import AuditError
from porter.verification.npu import audit_module, load_registry

REGISTRY = load_registry()


class Body(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.norm = nn.InstanceNorm2d(8, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(torch.relu(self.bn(self.conv(x))), scale_factor=2, mode="bilinear")
        return self.norm(x)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(8, 1, 1)
        self.loss = nn.HuberLoss()  # aten::huber_loss: no torch_npu kernel, no composite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y + self.loss(y, torch.zeros_like(y))


class WithHuber(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = Body(), Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _leaves(report: dict) -> set[str]:
    """The ops that finally run: kernels as they are, composites by their parts (a composite
    such as broadcast_tensors of equal shapes may call none)."""
    out: set[str] = set()
    for rec in report["ops"]:
        out |= set(rec["via"]) if rec["status"] == "decomposed" else {rec["op"]}
    return out


class DataDependent(nn.Module):
    """A length read from the data: torch.export cannot trace it, a real forward runs it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        k = int((y > 0).sum())
        return y.reshape(-1)[:k] * 2


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)  # fed 3 features below: fails in every capture


def test_dispatch_capture_judges_the_same_ops_as_export() -> None:
    x = torch.randn(1, 3, 8, 8)
    exported = audit_module(WithHuber(), (x,), registry=REGISTRY)
    dispatched = audit_module(WithHuber(), (x,), registry=REGISTRY, capture="dispatch")
    assert (exported["capture"], dispatched["capture"]) == ("torch.export", "dispatch")
    json.dumps(dispatched)
    # composite-implicit ops reach the dispatch mode already decomposed: same final ops
    assert _leaves(dispatched) == _leaves(exported)
    assert dispatched["missing"] == exported["missing"] == [{
        "op": "aten::huber_loss", "chain": ["aten::huber_loss"], "modules": ["head.loss"],
        "note": "no torch_npu kernel and no composite kernel: CPU fallback or error"}]
    by_op = {o["op"]: o for o in dispatched["ops"]}
    assert by_op["aten::convolution"]["modules"] == ["body.conv", "head.proj"]
    assert by_op["aten::convolution"]["count"] == 2
    assert by_op["aten::native_batch_norm"]["modules"] == ["body.bn", "body.norm"]
    assert not dispatched["passed"]


def test_untraceable_module_falls_back_to_dispatch(capfd: pytest.CaptureFixture) -> None:
    x = torch.randn(1, 2, 4, 4)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.export raises here
        torch.export.export(DataDependent().eval(), (x,))
    capfd.readouterr()
    report = audit_module(DataDependent(), (x,), registry=REGISTRY)
    assert report["capture"] == "dispatch" and report["passed"]
    (note,) = report["capture_notes"]
    assert note.startswith("torch.export (static): ")
    ops = {o["op"]: o for o in report["ops"]}
    assert {"aten::convolution", "aten::gt.Scalar", "aten::sum", "aten::mul.Tensor"} <= set(ops)
    assert ops["aten::convolution"]["modules"] == ["conv"]
    assert all(REGISTRY.has_kernel(v) for v in _leaves(report))
    assert capfd.readouterr().err == ""  # the failed export's graph dump stays off stderr


def test_audit_that_cannot_run_names_the_module() -> None:
    with pytest.raises(AuditError, match=r"cannot capture .*\.Broken: torch\.export .*; "
                                         r"dispatch: RuntimeError"):
        audit_module(Broken(), (torch.randn(2, 3),), registry=REGISTRY)
    with pytest.raises(AuditError, match="capture must be one of"):
        audit_module(Broken(), (torch.randn(2, 4),), registry=REGISTRY, capture="trace")


def test_recording_a_forward_that_runs_anyway_judges_what_export_judges() -> None:
    """The pipeline's capture: the parity runner's own inference-mode forward, recorded."""
    import numpy as np

    from porter.verification.npu.audit import recording
    from porter.verification.runtimes.torch_ import TorchRunner

    module = WithHuber().eval()
    runner = TorchRunner(module, ["x"], ["y"])
    x = {"x": np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    plain = runner(x)["y"]
    with recording(module, "from the parity forward") as captured:
        recorded = runner(x)["y"]
    assert np.array_equal(plain, recorded)  # recording does not change what runs
    report = audit_module(module, (), registry=REGISTRY, captured=captured)
    exported = audit_module(module, (torch.from_numpy(x["x"]),), registry=REGISTRY)
    assert report["capture"] == "dispatch" and exported["capture"] == "torch.export"
    assert report["capture_notes"] == ["from the parity forward"]
    # inference mode: composite ops arrive whole, as in the exported graph, with their modules
    strip = [o for o in exported["ops"] if o["op"] != "aten::_assert_tensor_metadata"]
    assert sorted(report["ops"], key=lambda o: o["op"]) == sorted(strip, key=lambda o: o["op"])
    assert report["missing"] == exported["missing"]
    # the runner's own conversions around the call (from_numpy, detach, float) are not recorded
    assert "aten::detach" not in {o["op"] for o in report["ops"]}
