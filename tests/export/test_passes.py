"""ONNX rewrite passes, each proven against onnxruntime on the original graph."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from porter.export.passes import get_passes
from porter.export.passes.float64_to_float32 import float64_to_float32
from porter.export.passes.int64_operands import int64_operands, mixed_int_nodes


def _run(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_registry_orders_passes_and_names_what_they_do():
    names = [p.name for p in get_passes()]
    assert names == ["float64-to-float32", "int64-operands"]
    assert all(p.matches and p.writes for p in get_passes())


def test_float64_to_float32_keeps_values_and_leaves_no_double():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    scale = numpy_helper.from_array(np.array([0.5, 2.0, -3.0]), "scale")  # float64 initializer
    nodes = [helper.make_node("Cast", ["x"], ["xd"], to=TensorProto.DOUBLE, name="up"),
             helper.make_node("Constant", [], ["off"], name="off",
                              value=numpy_helper.from_array(np.array(0.25))),
             helper.make_node("Mul", ["xd", "scale"], ["m"], name="mul"),
             helper.make_node("Add", ["m", "off"], ["a"], name="add"),
             helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT, name="down")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale]),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"x": np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)}
    before = _run(model, feeds)[0]
    res = float64_to_float32(model)
    assert res.changed >= 3  # the initializer, the Constant, the Cast to double
    onnx.checker.check_model(model, full_check=True)
    text = str(model)
    assert "data_type: 11" not in text and "i: 11" not in text  # 11 == DOUBLE
    after = _run(model, feeds)[0]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-7)


def test_int64_operands_casts_int32_indices_beside_int64_data():
    data = helper.make_tensor_value_info("data", TensorProto.INT64, [4, 3])
    idx = helper.make_tensor_value_info("idx", TensorProto.INT32, [2])
    out = helper.make_tensor_value_info("out", TensorProto.INT64, [2, 3])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Gather", ["data", "idx"], ["out"], axis=0, name="gather")],
        "g", [data, idx], [out]), opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    feeds = {"data": np.arange(12, dtype=np.int64).reshape(4, 3),
             "idx": np.array([3, 1], dtype=np.int32)}
    before = _run(model, feeds)[0]
    assert mixed_int_nodes(model) == ["Gather gather"]
    res = int64_operands(model)
    assert res.changed == 1 and "input 1 int32 -> int64" in res.details[0]
    onnx.checker.check_model(model, full_check=True)
    assert mixed_int_nodes(model) == []
    np.testing.assert_array_equal(_run(model, feeds)[0], before)


def test_int64_operands_leaves_a_clean_graph_alone():
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.INT64, [3])
    model = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "x"], ["y"], name="add")], "g", [x], [y]),
        opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    assert int64_operands(model).changed == 0
