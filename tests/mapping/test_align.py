"""Structural alignment: pairs by data flow, kind and shape; refuses ties and leftovers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import porter
from porter.errors import MappingError
from porter.mapping.align import align_by_structure
from porter.mapping.recipe import load_strict
from porter.verification.runtimes.onnxruntime import OrtRunner


class Chain(nn.Module):
    """conv-bn-relu, a linear head: exercises BN folding and MatMul/Gemm layouts."""

    def __init__(self, c: int = 8, extra: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 1)
        self.extra = nn.Conv2d(c, c, 1) if extra else None
        self.fc = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.bn(self.conv(x))))
        if self.extra is not None:
            x = self.extra(x)
        return self.fc(x.mean(dim=(2, 3)))


class Twins(nn.Module):
    """Two identical convs reading the same input: nothing tells them apart."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * 2 + self.b(x)


def _export(module: nn.Module, path, opset: int = 13) -> None:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if "var" in name
                        else torch.randn(t.shape, generator=gen))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False,
                          opset_version=opset, input_names=["x"], output_names=["y"])


@pytest.mark.parametrize("opset", [11, 17])
def test_folded_batchnorm_and_linear_port_exactly(tmp_path, opset):
    path = tmp_path / "chain.onnx"
    _export(Chain(), path, opset)
    source = porter.open(path)
    target = Chain().eval()
    state, report = align_by_structure(source, target)
    load_strict(target, state)
    assert report.counts()["accounted"] == len(source.tensors)
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    want = OrtRunner(path)({"x": x})["y"]
    with torch.no_grad():
        got = target(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() <= 1e-5
    kinds = {e.transform for e in report.entries if e.action in ("mapped", "filled")}
    assert "unfold_bn_bias" in kinds and "1-eps" in kinds


def test_tie_is_refused(tmp_path):
    path = tmp_path / "twins.onnx"
    _export(Twins(), path)
    with pytest.raises(MappingError, match="ties between a and b"):
        align_by_structure(porter.open(path), Twins())


def test_source_with_an_extra_layer_names_it(tmp_path):
    path = tmp_path / "extra.onnx"
    _export(Chain(extra=True), path)
    with pytest.raises(MappingError, match="no target unit fits source conv"):
        align_by_structure(porter.open(path), Chain())


def test_target_with_an_extra_layer_is_refused(tmp_path):
    path = tmp_path / "chain.onnx"
    _export(Chain(), path)
    # The head reads `extra` in the target but conv2 in the source: the data flow differs.
    with pytest.raises(MappingError, match="other data flow: linear fc"):
        align_by_structure(porter.open(path), Chain(extra=True))


def test_target_with_an_unused_layer_is_a_leftover(tmp_path):
    class Unused(Chain):
        def __init__(self) -> None:
            super().__init__()
            self.spare = nn.Conv2d(8, 8, 1)

    path = tmp_path / "chain.onnx"
    _export(Chain(), path)
    with pytest.raises(MappingError, match="left unfilled"):
        align_by_structure(porter.open(path), Unused())


def test_wrong_width_does_not_fit(tmp_path):
    path = tmp_path / "chain.onnx"
    _export(Chain(c=8), path)
    with pytest.raises(MappingError, match="no target unit fits"):
        align_by_structure(porter.open(path), Chain(c=6))
