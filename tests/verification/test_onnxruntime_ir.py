"""A file whose declared ONNX IR version is newer than onnxruntime reads: run as the newest IR
onnxruntime takes, said in the parity note; one that still fails says why in one line."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from porter.errors import FormatError
from porter.pipeline import convert
from porter.verification.runtimes.onnxruntime import OrtRunner


def _newest_ir() -> int:
    """The highest IR version this onnxruntime loads, from its own refusal."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 99
    with pytest.raises(Exception) as err:
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(re.search(r"max supported IR version: (\d+)", str(err.value)).group(1))


def _model(ir: int, op: str = "Elu") -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = ir
    return model


def test_newer_ir_runs_as_the_newest_supported_with_a_note(tmp_path):
    newest = _newest_ir()
    runner = OrtRunner(_model(newest + 1))
    assert f"declares IR {newest + 1} and ran as IR {newest}" in runner.note
    x = np.linspace(-2, 2, 6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(runner({"x": x})["y"], np.where(x > 0, x, np.expm1(x)),
                               rtol=1e-6, atol=1e-7)
    assert OrtRunner(_model(newest)).note == ""

    path = tmp_path / "new_ir.onnx"
    onnx.save(_model(newest + 1), path)
    res = convert(path, to="torch", verify="cpu", out=tmp_path / "out")
    assert res.manifest["parity"]["passed"]
    assert f"declares IR {newest + 1} and ran as IR {newest}" in res.manifest["parity"]["note"]


def test_newer_ir_that_still_fails_is_one_clear_error():
    newest = _newest_ir()
    with pytest.raises(FormatError, match=rf"reads ONNX IR <= {newest} and the file declares "
                                          rf"IR {newest + 1}; read as IR {newest} it still "
                                          "fails"):
        OrtRunner(_model(newest + 1, op="NoSuchOp"))
