"""The generic Paddle path: paddle2onnx (child, porter's onnx) -> ONNX, checked against Paddle."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import porter
from porter.importers.paddle import to_onnx
from porter.importers.paddle_onnx import repair_scalar_concat
from porter.verification.runtimes.onnxruntime import OrtRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(paddle_models: Path) -> Path:
    return paddle_models


@pytest.mark.parametrize("mode", ["legacy", "pir"])
def test_to_onnx_matches_paddle(models: Path, mode: str) -> None:
    with open(models / mode / "inference.ref.pkl", "rb") as fh:  # our own fixture builder
        ref = pickle.load(fh)
    src = porter.open(models / mode)
    model = to_onnx(src)
    onnx.checker.check_model(model, full_check=True)
    assert onnx.__version__ == "1.23.2"
    if mode == "legacy":
        assert [o.name for o in model.graph.output] == ["softmax_0.tmp_0"]
    out = OrtRunner(model)({"x": ref["x"]})
    (got,) = out.values()
    assert np.max(np.abs(got - ref["y"])) <= 1e-5
    # The ONNX weights are Paddle's, bit for bit.
    consts = porter.importers.onnx.source_from_model(model, models / mode / "x.onnx").tensors
    for name, want in ref["arrays"].items():
        assert consts[name].numpy().tobytes() == want.tobytes(), name


def test_repair_scalar_concat_makes_a_valid_shape_list() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 12])
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),  # 0-d: x.shape[0]
        helper.make_node("Concat", ["n", "m1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [helper.make_tensor("i0", TensorProto.INT64, [], [0]),
             helper.make_tensor("m1", TensorProto.INT64, [1], [-1])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    assert repair_scalar_concat(model) == 1
    onnx.checker.check_model(model, full_check=True)
    a = np.arange(24, dtype="float32").reshape(2, 3, 4)
    assert OrtRunner(model)({"x": a})["y"].shape == (2, 12)
