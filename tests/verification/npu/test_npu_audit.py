"""audit_module: the ops of the exported graph, each decided as the NPU dispatcher would."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from porter.errors import AuditError
from porter.substitutes import apply_substitutes
from porter.verification.npu import audit_module, canonical_op_name, load_registry, raise_if_missing

REGISTRY = load_registry()


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.norm = nn.InstanceNorm2d(8, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.conv(x)))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return self.norm(x)


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(8, 1, 1)
        self.loss = nn.HuberLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.proj(x)
        return y + self.loss(y, torch.zeros_like(y))


class WithHuber(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = Small()
        self.head = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _exported_counts(module: nn.Module, x: torch.Tensor) -> Counter:
    ep = torch.export.export(module.eval(), (x,))
    return Counter(f"aten::{canonical_op_name(n.target)}" for n in ep.graph.nodes
                   if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload))


def test_lists_exactly_the_exported_ops() -> None:
    x = torch.randn(1, 3, 16, 16)
    report = audit_module(Small(), (x,), registry=REGISTRY)
    assert {o["op"]: o["count"] for o in report["ops"]} == dict(_exported_counts(Small(), x))
    json.dumps(report)  # JSON-able as promised
    by_op = {o["op"]: o for o in report["ops"]}
    for op, rec in by_op.items():
        # status follows the registry: a torch_npu kernel, or a composite judged by its parts
        if REGISTRY.has_kernel(op):
            assert (rec["status"], rec["kernel"], rec["via"]) == ("npu", "torch_npu", []), op
        else:
            assert rec["status"] == "decomposed" and rec["via"], op
            assert all(REGISTRY.has_kernel(v) for v in rec["via"]), op
    assert by_op["aten::conv2d"]["via"] == ["aten::convolution"]
    assert by_op["aten::conv2d"]["modules"] == ["conv"]
    assert "aten::native_batch_norm" in by_op["aten::batch_norm"]["via"]
    assert by_op["aten::upsample_bilinear2d.vec"]["via"] == ["aten::upsample_bilinear2d"]
    assert by_op["aten::instance_norm"]["modules"] == ["norm"]
    assert by_op["aten::relu"]["modules"] == ["relu"]
    assert report["passed"] and report["missing"] == [] and report["device"] == "audit"
    assert report["registry"]["version"] == "2.13.0"


def test_op_without_npu_kernel_is_flagged_with_its_module() -> None:
    op = torch.ops.aten.huber_loss.default
    assert not REGISTRY.has_kernel(op)
    for key in ["CompositeImplicitAutograd", "CompositeExplicitAutograd"]:
        assert not torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key)
    report = audit_module(WithHuber(), (torch.randn(1, 3, 8, 8),), registry=REGISTRY)
    assert report["passed"] is False
    assert report["missing"] == [{
        "op": "aten::huber_loss", "chain": ["aten::huber_loss"], "modules": ["head.loss"],
        "note": "no torch_npu kernel and no composite kernel: CPU fallback or error"}]
    (rec,) = [o for o in report["ops"] if o["status"] == "missing"]
    assert (rec["op"], rec["kernel"], rec["modules"]) == ("aten::huber_loss", "none",
                                                          ["head.loss"])
    assert {o["op"]: o["modules"] for o in report["ops"]}["aten::conv2d"] == [
        "body.conv", "head.proj"]
    with pytest.raises(AuditError, match=r"aten::huber_loss .* in head\.loss"):
        raise_if_missing(report)


def test_missing_part_of_a_composite_is_traced_to_it() -> None:
    """A registry without native_batch_norm: instance_norm is flagged through its chain."""
    reg = type(REGISTRY)(ops=REGISTRY.ops - {"native_batch_norm"}, source="test",
                         version="0", sha256="0" * 64)
    report = audit_module(nn.Sequential(nn.InstanceNorm2d(4)), (torch.randn(1, 4, 8, 8),),
                          registry=reg)
    (miss,) = report["missing"]
    assert miss["chain"] == ["aten::instance_norm", "aten::batch_norm",
                             "aten::_batch_norm_impl_index", "aten::native_batch_norm"]
    assert miss["modules"] == ["0"] and not report["passed"]


def test_substituted_instance_norm_audits_clean() -> None:
    x = torch.randn(2, 3, 16, 16)
    original = Small().eval()
    model, _ = apply_substitutes(original)
    report = audit_module(model, (x,), registry=REGISTRY)
    ops = {o["op"] for o in report["ops"]}
    assert "aten::instance_norm" not in ops and report["passed"]
    norm_ops = {o["op"]: o for o in report["ops"] if o["modules"] == ["norm"]}
    assert not [op for op in ops if "norm" in op.split("::")[1] and "batch" not in op]
    assert {"aten::mean.dim", "aten::sub.Tensor", "aten::mul.Tensor", "aten::add.Tensor",
            "aten::rsqrt"} <= {op for op, o in norm_ops.items() if o["status"] == "npu"}
    assert all(o["status"] != "missing" for o in norm_ops.values())
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max().item() < 1e-5


def test_device_branch_compares_cpu_and_npu_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an NPU present the audit also runs the module there; here a stand-in 'device'
    returns the CPU result shifted by a known offset, which the comparison must report."""
    import porter.verification.npu.audit as audit

    offset = 1e-3

    def fake_run(module: nn.Module, inputs: tuple) -> torch.Tensor:
        with torch.no_grad():
            return module(*inputs) + offset

    monkeypatch.setattr(audit, "npu_available", lambda: True)
    monkeypatch.setattr(audit, "run_on_npu", fake_run)
    x = torch.randn(1, 3, 8, 8)
    report = audit_module(Small(), (x,), registry=REGISTRY)
    assert report["device"] == "npu" and report["passed"]
    (metrics,) = report["outputs"]
    assert metrics["shape"] == [1, 8, 16, 16]
    assert abs(metrics["max_abs"] - offset) < 1e-6 and abs(metrics["mean_abs"] - offset) < 1e-6
    raw = audit_module(Small(), (x,), registry=REGISTRY, compare=None)["outputs"][0]
    assert abs(float((raw["npu"] - raw["cpu"]).mean()) - offset) < 1e-6
