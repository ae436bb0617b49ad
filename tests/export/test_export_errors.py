"""Every exporter failure is one PorterError line naming where it happened: torch.onnx export
errors (with the torch module), onnxslim raising, the float64 arbitration failing; fast,
real failures of the real tools (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper

from porter.errors import ParityError, PorterError
from porter.export.torch_onnx import ExportError, export_lowest_opset, simplify
from porter.pipeline import export_module
from porter.verification.parity import Case, random_cases


class _RoundPool(torch.nn.Module):
    """Python ``round()`` on a traced size: torch.onnx's tracer hands sizes over as tensors."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, (round(x.shape[2] / 2), round(x.shape[3] / 2)))


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Sequential(torch.nn.ReLU(), _RoundPool())

    def forward(self, x):
        return self.head(self.stem(x))


def test_export_error_names_the_torch_module_and_stops_early():
    """An error that names no opset fails the same way at every opset: one attempt, not eight."""
    with pytest.raises(ExportError) as err:
        export_lowest_opset(_Net().eval(), [torch.zeros(1, 3, 8, 8)], ["x"], ["y"],
                            pick=lambda out: (out,))
    msg = str(err.value)
    assert msg.startswith("torch.onnx cannot export this module at opset 11 (in torch module "
                          "head.1 (_RoundPool)): ")
    assert "__round__" in msg and "\n" not in msg and isinstance(err.value, PorterError)


def test_export_error_through_the_target_is_one_line_and_writes_nothing(tmp_path, capfd):
    out = tmp_path / "net"
    with pytest.raises(ExportError) as err:
        export_module(_Net().eval(), random_cases("x", [(1, 3, 8, 8)]), input_names=["x"],
                      output_names=["y"], target="atc", out=out, options={"dynamic": "none"})
    assert "in torch module head.1 (_RoundPool)" in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists() and not list(tmp_path.iterdir())
    # torch.onnx's C++ side dumps the whole TorchScript graph on failure: swallowed
    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.out + captured.err


def test_onnxslim_failure_is_an_export_error():
    """A graph whose nodes feed each other in a cycle: onnxslim's topological walk recurses
    without end; porter reports it as one line instead of a RecursionError traceback."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [helper.make_node("Add", ["x", "t2"], ["t1"], name="/m/a/Add"),
             helper.make_node("Relu", ["t1"], ["t2"], name="/m/b/Relu"),
             helper.make_node("Relu", ["t2"], ["y"], name="/m/c/Relu")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ExportError, match=r"^onnxslim \S+ failed to simplify the exported graph "
                                          r"\(RecursionError: "):
        simplify(model)


class _Branchy(torch.nn.Module):
    """Traced on a positive-sum input the export keeps only the first branch, so a negative-sum
    case disagrees; the float64 run that would arbitrate fails in ``proj``, whose weight is
    used as float32 whatever the module's dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = _Float32Only()

    def forward(self, x):
        return self.proj(x) * (2.0 if float(x.sum()) > 0 else -3.0)


class _Float32Only(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.eye(4))

    def forward(self, x):
        return x @ self.w.float()


def test_failed_float64_arbitration_is_a_parity_error_naming_the_module(tmp_path):
    pos = np.abs(np.random.default_rng(0).normal(size=(2, 4))).astype(np.float32)
    cases = [Case("positive", {"x": pos}, 0), Case("negative", {"x": -pos}, 1)]
    with pytest.raises(ParityError) as err:
        export_module(_Branchy().eval(), cases, input_names=["x"], output_names=["y"],
                      target="onnxruntime", out=tmp_path / "o")
    msg = str(err.value)
    assert "disagrees with the torch module: worst max|Δ|" in msg
    assert "the float64 run that would arbitrate failed in torch module proj (_Float32Only)" in msg
    assert "RuntimeError" in msg and "\n" not in msg
    assert not (tmp_path / "o").exists()


class _UnfoldPool(torch.nn.Module):
    """2x2 mean pooling through ``Tensor.unfold``: torch.onnx exports Unfold only when the input
    sizes are static."""

    def forward(self, x):
        return x.unfold(2, 2, 2).unfold(3, 2, 2).mean((-1, -2))


def test_dynamic_export_that_cannot_trace_falls_back_to_static_and_says_so(tmp_path):
    res = export_module(_UnfoldPool().eval(), random_cases("x", [(1, 2, 8, 12)]),
                        input_names=["x"], output_names=["y"], target="onnxruntime",
                        out=tmp_path / "o", options={"dynamic": "auto"})
    dyn = res.manifest["onnx"]["dynamic"]
    assert dyn["hw"] is False and dyn["gears"] == []
    assert dyn["note"].startswith("static export: torch.onnx could not export dynamic H/W (")
    assert "Unfold" in dyn["note"] and res.manifest["parity"]["passed"]
    assert [d["shape"] for d in res.manifest["onnx"]["inputs"]] == [[1, 2, 8, 12]]
    with pytest.raises(ExportError, match=r"^--dynamic hw: torch.onnx cannot export .*Unfold"):
        export_module(_UnfoldPool().eval(), random_cases("x", [(1, 2, 8, 12)]),
                      input_names=["x"], output_names=["y"], target="onnxruntime",
                      out=tmp_path / "o2", options={"dynamic": "hw"})
    assert not (tmp_path / "o2").exists()
