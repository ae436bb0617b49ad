"""Hostile ONNX graphs (issue 10, cases 7 and 9): attacker-sized constant folding, a Loop that
never ends, and malformed numbers are one-line porter errors, fast and under a 2 GiB cap."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.security.conftest import assert_one_line_error, open_all, porter_cli


def _save(path, nodes, inputs, outputs, inits=()) -> None:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    onnx.save(helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]),
              str(path))


def _f(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _convert(path, cwd, verify: str = "cpu"):
    return porter_cli("convert", str(path), "--verify", verify, "--out", str(cwd / "out"), "-q",
                      cwd=cwd, timeout=180)


@pytest.mark.slow  # a full `porter convert` in a child
@pytest.mark.parametrize("kind", ["ConstantOfShape", "Range"])
def test_constant_folding_is_budgeted(arena, kind: str) -> None:
    """Case 7: ConstantOfShape([1e6, 1e6]) / Range(0, 1e12, 1) folded at convert time."""
    model, cwd = arena
    if kind == "ConstantOfShape":
        inits = [numpy_helper.from_array(np.array([10 ** 6, 10 ** 6], np.int64), "shape")]
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["big"]),
                 helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0)]
    else:
        inits = [numpy_helper.from_array(np.array(v, np.float32), n)
                 for n, v in (("a", 0.0), ("b", 1e12), ("d", 1.0))]
        nodes = [helper.make_node("Range", ["a", "b", "d"], ["big"]),
                 helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0)]
    nodes.append(helper.make_node("Add", ["x", "s"], ["y"]))
    path = model / "m.onnx"
    _save(path, nodes, [_f("x", [1])], [_f("y", [1])], inits)
    t0 = time.monotonic()
    assert_one_line_error(_convert(path, cwd), "PORTER_MAX_FOLD_ELEMENTS")
    assert time.monotonic() - t0 < 120


@pytest.mark.slow  # a full `porter convert` in a child
def test_loop_that_never_stops_is_refused_before_onnxruntime(arena) -> None:
    """Case 7: a Loop with a 1e12 constant trip count and a pass-through condition."""
    model, cwd = arena
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["v_in", "one"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _f("v_in", [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _f("v_out", [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    inits = [numpy_helper.from_array(np.array(10 ** 12, np.int64), "M"),
             numpy_helper.from_array(np.array(True), "c")]
    nodes = [helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body)]
    path = model / "m.onnx"
    _save(path, nodes, [_f("x", [1])], [_f("y", [1])], inits)
    assert_one_line_error(_convert(path, cwd), "PORTER_MAX_LOOP_TRIPS")


def _external_model(path, offset: str, length: str, dims=(4,)) -> None:
    t = helper.make_tensor("w", TensorProto.FLOAT, list(dims), np.zeros(max(
        int(np.prod(dims)), 0), np.float32)) if min(dims) >= 0 else helper.make_tensor(
        "w", TensorProto.FLOAT, [4], np.zeros(4, np.float32))
    if min(dims) < 0:
        del t.dims[:]
        t.dims.extend(dims)
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "w.bin"), ("offset", offset), ("length", length)):
        e = t.external_data.add()
        e.key, e.value = k, v
    _save(path, [helper.make_node("Add", ["x", "w"], ["y"])], [_f("x", [4])], [_f("y", [4])],
          [t])
    (path.parent / "w.bin").write_bytes(np.ones(64, np.float32).tobytes())


@pytest.mark.parametrize("offset,length,dims,match", [
    ("abc", "16", (4,), "must be integers"),
    ("64.0", "16", (4,), "must be integers"),
    ("-16", "16", (4,), "negative offset"),
    ("0", "16", (-4,), "negative dimension"),
])
def test_malformed_external_numbers_are_format_errors(arena, offset, length, dims,
                                                      match) -> None:
    """Case 9: offset/length ``"abc"`` / ``"64.0"`` and negative dims raised ValueError."""
    model, cwd = arena
    path = model / "m.onnx"
    _external_model(path, offset, length, dims)
    assert_one_line_error(open_all(path, cwd), match)


@pytest.mark.slow  # a full `porter convert` in a child
def test_output_never_produced(arena) -> None:
    """Case 9: a graph output no node produces."""
    model, cwd = arena
    path = model / "m.onnx"
    _save(path, [helper.make_node("Relu", ["x"], ["y"])], [_f("x", [4])],
          [_f("y", [4]), _f("ghost", [4])])
    assert_one_line_error(_convert(path, cwd, "none"), "ghost")


@pytest.mark.slow  # a full `porter convert` in a child
def test_loop_whose_condition_stays_true_is_stopped_by_the_runtime_timeout(arena) -> None:
    """Case 7: the condition is computed (v > -1, always true), so no static check can tell;
    onnxruntime is stopped by its run timeout instead of spinning through 1e12 iterations."""
    model, cwd = arena
    body = helper.make_graph(
        [helper.make_node("Add", ["v_in", "one"], ["v_out"]),
         helper.make_node("ReduceSum", ["v_out"], ["s"], keepdims=0),
         helper.make_node("Greater", ["s", "minus"], ["cond_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []), _f("v_in", [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []), _f("v_out", [1])],
        [numpy_helper.from_array(np.ones(1, np.float32), "one"),
         numpy_helper.from_array(np.array(-1e30, np.float32), "minus")])
    inits = [numpy_helper.from_array(np.array(10 ** 12, np.int64), "M"),
             numpy_helper.from_array(np.array(True), "c")]
    path = model / "m.onnx"
    _save(path, [helper.make_node("Loop", ["M", "c", "x"], ["y"], body=body)], [_f("x", [1])],
          [_f("y", [1])], inits)
    import os
    os.environ["PORTER_ORT_TIMEOUT"] = "5"
    try:
        t0 = time.monotonic()
        assert_one_line_error(_convert(path, cwd), "PORTER_ORT_TIMEOUT")
        assert time.monotonic() - t0 < 120
    finally:
        del os.environ["PORTER_ORT_TIMEOUT"]
