"""locate_divergence names the node whose weight was corrupted."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from porter.converters import convert_onnx
from porter.verification.locate import locate_divergence

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "converters"))
from test_convert import _model  # noqa: E402


def test_clean_module_does_not_diverge() -> None:
    x = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    report = locate_divergence(_model(), x, tol=1e-4)
    assert report["diverged"] is False and report["checked"] >= 5


def test_corrupted_weight_is_located() -> None:
    model = _model()
    module = convert_onnx(model)
    with torch.no_grad():
        module.head.fc.weight[0, 0] += 0.5
    x = {"x": np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    report = locate_divergence(model, x, module=module, tol=1e-4)
    assert report["diverged"] is True
    assert report["node"] == "/head/fc/MatMul" and report["module"] == "head.fc"
    assert report["metrics"]["max_abs"] > 1e-3
