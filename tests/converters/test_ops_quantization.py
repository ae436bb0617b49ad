"""Quantization ops: node-suite cases and onnxruntime parity on hand-built graphs.

int4 / uint4 / int2 / uint2 / float4e2m1 cases are left out: torch has no usable dtype for them.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from onnx_conformance import run_porter  # noqa: E402

from porter.converters import convert_onnx  # noqa: E402
from porter.converters.ops.quantization import matmul_integer  # noqa: E402

OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
       "ConvInteger", "QLinearMatMul", "QLinearConv"}
NO_TORCH_DTYPE = re.compile(r"(int4|uint4|int2|uint2|float4)")


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases()
                if OPS & {n.op_type for n in c.model.graph.node} and not NO_TORCH_DTYPE.search(c.name)]


CASES = _cases()


def test_selection_covers_every_op() -> None:
    assert {n.op_type for c in CASES for n in c.model.graph.node} >= OPS
    assert len(CASES) >= 35


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


def _run_both(node, inputs: dict[str, np.ndarray], consts: dict[str, np.ndarray], opset: int,
              out_types: tuple = (np.uint8,)) -> None:
    """Run ``node`` (graph inputs ``inputs``, initializers ``consts``) in onnxruntime and porter."""
    vi = [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
          for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(o, helper.np_dtype_to_tensor_dtype(np.dtype(t)), None)
            for o, t in zip(node.output, out_types)]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    graph = helper.make_graph([node], "g", vi, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=10 if opset >= 21 else 8)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, inputs)
    with torch.no_grad():
        out = convert_onnx(model)(*[torch.from_numpy(v) for v in inputs.values()])
    outs_t = list(out) if isinstance(out, tuple) else [out]
    assert len(outs_t) == len(ref)
    for got, exp in zip(outs_t, ref):
        got = got.numpy()
        assert got.dtype == exp.dtype
        np.testing.assert_allclose(got.astype(np.float64), exp.astype(np.float64), rtol=1e-6,
                                   atol=1e-6)


RNG = np.random.default_rng(0)


@pytest.mark.parametrize("zp_dtype", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("mode", ["tensor", "axis", "blocked"])
def test_quantize_dequantize_match_onnxruntime(zp_dtype, mode) -> None:
    x = (RNG.standard_normal((2, 6, 4)) * 40).astype(np.float32)
    x[0, 0, :3] = [0.5, 1.5, 2.5]  # ties round to even
    shape, kw = {"tensor": ((), {}), "axis": ((6,), {"axis": 1}),
                 "blocked": ((2, 2, 4), {"axis": 1, "block_size": 3})}[mode]
    scale = RNG.uniform(0.5, 2.0, shape).astype(np.float32)
    if mode == "tensor":
        scale = np.array(1.0, np.float32)
    zp = RNG.integers(0, 10, shape).astype(zp_dtype)
    q = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], **kw)
    _run_both(q, {"x": x}, {"s": scale, "z": zp}, 21, (zp_dtype,))
    info = np.iinfo(zp_dtype)
    xq = RNG.integers(info.min, info.max, x.shape, endpoint=True).astype(zp_dtype)
    d = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"], **kw)
    _run_both(d, {"x": xq}, {"s": scale, "z": zp}, 21, (np.float32,))


def test_quantize_float8_matches_onnxruntime() -> None:
    x = (RNG.standard_normal((3, 5)) * 300).astype(np.float32)
    q = helper.make_node("QuantizeLinear", ["x", "s"], ["y"],
                         output_dtype=TensorProto.FLOAT8E4M3FN)
    vi = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)]
    graph = helper.make_graph([q], "g", vi, [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT8E4M3FN, None)], initializer=[
        numpy_helper.from_array(np.array(2.0, np.float32), "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    got = convert_onnx(model)(torch.from_numpy(x))
    assert got.dtype == torch.float8_e4m3fn
    ref = ref.view(ml_dtypes.float8_e4m3fn)  # onnxruntime hands float8 back as raw bytes
    np.testing.assert_array_equal(got.float().numpy(), ref.astype(np.float32))


def test_dynamic_quantize_linear_matches_onnxruntime() -> None:
    x = (RNG.standard_normal((4, 7)) * 3 + 1).astype(np.float32)
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    _run_both(node, {"x": x}, {}, 11, (np.uint8, np.float32, np.uint8))


# onnxruntime's uint8 x int8 kernel on AVX2 machines without VNNI (vpmaddubsw) saturates each
# pair of products to int16, so raw uint8 operands stay below 128 where it is the reference:
# 127 * 128 * 2 fits; 255 * 127 * 2 does not, and on such a CPU onnxruntime is the wrong side.
U8_EXACT_IN_ORT = 128


def test_matmul_integer_matches_onnxruntime_and_exact_integers() -> None:
    a = RNG.integers(0, U8_EXACT_IN_ORT, (2, 3, 5)).astype(np.uint8)
    b = RNG.integers(-128, 127, (5, 4)).astype(np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])
    _run_both(node, {"a": a, "b": b}, {"az": np.array(12, np.uint8),
                                       "bz": np.array(-3, np.int8)}, 10, (np.int32,))


def test_matmul_integer_is_exact_over_the_full_uint8_range() -> None:
    """Full-range operands against int64 numpy (onnxruntime may saturate here; see above)."""
    a = RNG.integers(0, 256, (2, 3, 5)).astype(np.uint8)
    b = RNG.integers(-128, 128, (5, 4)).astype(np.int8)
    got = matmul_integer(torch.from_numpy(a), torch.from_numpy(b), torch.tensor(12, dtype=torch.uint8),
                         torch.tensor(-3, dtype=torch.int8))
    exact = (a.astype(np.int64) - 12) @ (b.astype(np.int64) + 3)
    assert got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy(), exact)


def test_conv_integer_matches_onnxruntime() -> None:
    x = RNG.integers(0, 255, (1, 2, 6, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8)
    node = helper.make_node("ConvInteger", ["x", "w", "xz", "wz"], ["y"], pads=[1, 0, 2, 1],
                            strides=[2, 1])
    _run_both(node, {"x": x, "w": w}, {"xz": np.array(100, np.uint8),
                                       "wz": np.array(7, np.uint8)}, 10, (np.int32,))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_matmul_matches_onnxruntime(dtype) -> None:
    info = np.iinfo(dtype)
    a = RNG.integers(info.min, info.max, (3, 8)).astype(dtype)
    b = RNG.integers(info.min, info.max, (8, 5)).astype(dtype)
    consts = {"as": np.array(0.02, np.float32), "az": np.array(3, dtype),
              "bs": np.array(0.01, np.float32), "bz": np.array(-2 if info.min else 5, dtype),
              "ys": np.array(0.3, np.float32), "yz": np.array(10, dtype)}
    node = helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                            ["y"])
    _run_both(node, {"a": a, "b": b}, consts, 21, (dtype,))


def test_qlinear_conv_matches_onnxruntime() -> None:
    x = RNG.integers(0, U8_EXACT_IN_ORT, (1, 3, 7, 7)).astype(np.uint8)
    w = RNG.integers(-100, 100, (4, 3, 3, 3)).astype(np.int8)
    consts = {"xs": np.array(0.05, np.float32), "xz": np.array(64, np.uint8),
              "w": w, "ws": RNG.uniform(0.001, 0.01, 4).astype(np.float32),
              "wz": np.zeros(4, np.int8), "ys": np.array(0.5, np.float32),
              "yz": np.array(128, np.uint8), "b": RNG.integers(-500, 500, 4).astype(np.int32)}
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
                            ["y"], pads=[1, 1, 1, 1], strides=[1, 2])
    _run_both(node, {"x": x}, consts, 10)


def test_onnxruntime_contrib_op_is_refused_with_what_to_do_instead() -> None:
    """A QOperator-format file from onnxruntime's quantizer holds com.microsoft ops (QLinearMul,
    QLinearAdd …): not standard ONNX; the error says so and names the QDQ format instead."""
    from porter.errors import UnsupportedOpError

    node = helper.make_node("QLinearMul", ["a", "s", "z", "b", "s", "z", "s", "z"], ["y"],
                            domain="com.microsoft")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, TensorProto.UINT8, [4]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [4])],
        [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
         helper.make_tensor("z", TensorProto.UINT8, [], [128])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)])
    with pytest.raises(UnsupportedOpError, match=r"com\.microsoft::QLinearMul .*onnxruntime "
                                                 r"contrib op.*QuantFormat\.QDQ"):
        convert_onnx(model)
