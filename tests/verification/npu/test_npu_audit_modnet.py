"""A MODNet stand-in (the lead's op set) audits with zero missing ops after the substitutes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from porter.substitutes import apply_substitutes
from porter.verification.npu import audit_module, load_registry


def _cbr6(cin: int, cout: int, k: int, s: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_cbr6(c, 2 * c, 1, 1), _cbr6(2 * c, 2 * c, 3, 1, 2 * c),
                                  nn.Conv2d(2 * c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class IBNorm(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.n = c // 2
        self.bnorm = nn.BatchNorm2d(self.n)
        self.inorm = nn.InstanceNorm2d(c - self.n, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.bnorm(x[:, :self.n]), self.inorm(x[:, self.n:])), dim=1)


class SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c, c // 4, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(c // 4, c, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        w = self.fc(self.pool(x).view(b, c)).view(b, c, 1, 1)
        return x * w.expand_as(x)


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class ModnetStandIn(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.stem = _cbr6(3, c, 3, 2)
        self.block = InvertedResidual(c)
        self.down = _cbr6(c, c, 3, 2)
        self.se = SE(c)
        self.lr = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), IBNorm(c), nn.ReLU())
        self.hr = nn.Sequential(nn.Conv2d(c + 3, c, 3, 1, 1), IBNorm(c), nn.ReLU(inplace=True))
        self.head = nn.Conv2d(c + 3, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        enc2x = self.block(self.stem(img))
        lr4x = self.lr(self.se(self.down(enc2x)))
        img2x = _resize(img, 1 / 2)
        img4x = _resize(img, 1 / 4)
        hr2x = self.hr(torch.cat((_resize(lr4x, 2) + enc2x, img2x), dim=1))
        f = torch.cat((_resize(hr2x, 2), img), dim=1)
        return torch.sigmoid(self.head(f)) + 0 * img4x.mean()


def test_modnet_standin_has_no_missing_ops_after_substitutes() -> None:
    torch.manual_seed(0)
    original = ModnetStandIn().eval()
    x = torch.rand(1, 3, 64, 64)
    registry = load_registry()
    model, records = apply_substitutes(original, example_inputs=(x,))
    assert sorted({(r["rule"], r["module"]) for r in records if r["rule"] == "instance_norm"}) == [
        ("instance_norm", "hr.1.inorm"), ("instance_norm", "lr.1.inorm")]
    with torch.no_grad():
        assert (model(x) - original(x)).abs().max().item() < 1e-5

    report = audit_module(model, (x,), registry=registry)
    assert report["missing"] == [] and report["passed"]
    ops = {o["op"]: o for o in report["ops"]}
    for op in ["aten::conv2d", "aten::batch_norm", "aten::upsample_bilinear2d.vec",
               "aten::linear", "aten::expand_as", "aten::slice.Tensor"]:
        assert ops[op]["status"] == "decomposed"
        assert all(registry.has_kernel(v) for v in ops[op]["via"]), op
    for op in ["aten::hardtanh", "aten::relu", "aten::sigmoid", "aten::cat",
               "aten::adaptive_avg_pool2d", "aten::mul.Tensor", "aten::rsqrt"]:
        assert ops[op]["status"] == "npu", op
    assert "aten::instance_norm" not in ops and "aten::relu_" not in ops
    assert ops["aten::upsample_bilinear2d.vec"]["count"] == 4

    before = audit_module(original, (x,), registry=registry)
    assert before["passed"]  # the composite instance_norm also reaches NPU kernels
    assert {o["op"]: o["status"] for o in before["ops"]}["aten::instance_norm"] == "decomposed"
