"""Cast / CastLike / BitCast and element-wise ops on dtypes torch's CPU kernels lack.

Every node-suite case of these ops runs against its expected outputs, except the 4-bit, 2-bit,
float4, float8e8m0 and string cases: torch has no tensor type for them, so they cannot be fed or
compared at all. Those are not skipped silently: a test asserts that each of them really fails
for that reason, so the exclusion list cannot hide a case porter could run. Hand-built graphs are
compared with onnxruntime.
"""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from onnx_conformance import run_porter  # noqa: E402

from porter.converters import convert_onnx  # noqa: E402
from porter.errors import UnsupportedOpError  # noqa: E402

_OPS = re.compile(
    r"^test_(cast|castlike|bitcast|celu|elu|bitwise_not|bitshift|"
    r"(add|sub|mul|div|mod|max|min|greater|greater_equal|less|less_equal|equal)_u?int\d+)"
    r"(_|$)")
# types without a torch tensor type the harness could feed or compare
_NO_TORCH_TYPE = re.compile(r"INT4|INT2|FLOAT4|E8M0|e8m0|_string")


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases() if _OPS.search(c.name)]


CASES = [c for c in _cases() if not _NO_TORCH_TYPE.search(c.name)]
UNREPRESENTABLE = [c for c in _cases() if _NO_TORCH_TYPE.search(c.name)]


def test_selection() -> None:
    assert len(CASES) > 150 and len(UNREPRESENTABLE) == 76


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


def test_unrepresentable_cases_fail_only_for_want_of_a_torch_type() -> None:
    """Each excluded case fails at the torch boundary (feeding or comparing), not in porter."""
    for case in UNREPRESENTABLE:
        try:
            status = run_porter(case)
        except (TypeError, ValueError, RuntimeError, UnsupportedOpError) as exc:
            assert "type" in str(exc).lower() or "dtype" in str(exc).lower(), (case.name, exc)
            continue
        assert status == "mismatch", (case.name, status)


def _model(op: str, inputs: list[tuple[str, int, list[int]]], out_type: int, opset: int,
           **attrs):
    node = helper.make_node(op, [n for n, _, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info("y", out_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _ort(model, feeds: dict[str, np.ndarray]) -> np.ndarray:
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


_F8 = [(TensorProto.FLOAT8E4M3FN, torch.float8_e4m3fn), (TensorProto.FLOAT8E5M2, torch.float8_e5m2),
       (TensorProto.FLOAT8E4M3FNUZ, torch.float8_e4m3fnuz),
       (TensorProto.FLOAT8E5M2FNUZ, torch.float8_e5m2fnuz)]


@pytest.mark.parametrize("saturate", [0, 1])
@pytest.mark.parametrize("to", _F8, ids=lambda t: str(t[1]).removeprefix("torch."))
def test_cast_float8_matches_onnxruntime(to, saturate: int) -> None:
    x = np.array([0.0, -0.0, 0.3, -1.7, 100.0, 239.0, 250.0, 447.0, 465.0, 1e5, -6e4, np.inf,
                  -np.inf, np.nan], np.float32)
    # a trailing Cast back to float: onnxruntime cannot hand float8 outputs to numpy
    nodes = [helper.make_node("Cast", ["x"], ["q"], to=to[0], saturate=saturate),
             helper.make_node("Cast", ["q"], ["y"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [14])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    ref = _ort(model, {"x": x})
    got = convert_onnx(model)(torch.from_numpy(x))
    np.testing.assert_array_equal(got.numpy(), ref)


def test_castlike_matches_onnxruntime() -> None:
    x = np.array([[1.5, -2.7], [3e5, 0.25]], np.float32)
    like = np.zeros(1, np.float16)
    model = _model("CastLike", [("x", TensorProto.FLOAT, [2, 2]), ("like", TensorProto.FLOAT16, [1])],
                   TensorProto.FLOAT16, 19)
    ref = _ort(model, {"x": x, "like": like})
    got = convert_onnx(model)(torch.from_numpy(x), torch.from_numpy(like))
    np.testing.assert_array_equal(got.numpy(), ref)


def test_bitcast_reinterprets_bits() -> None:
    x = np.array([1.0, -2.5, np.inf], np.float32)
    model = _model("BitCast", [("x", TensorProto.FLOAT, [3])], TensorProto.INT32, 26,
                   to=TensorProto.INT32)
    got = convert_onnx(model)(torch.from_numpy(x))
    np.testing.assert_array_equal(got.numpy(), x.view(np.int32))


_UINT = [(TensorProto.UINT32, np.uint32), (TensorProto.UINT64, np.uint64)]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Mod", "Max", "Min", "Greater",
                                "Less", "GreaterOrEqual", "LessOrEqual", "Equal"])
@pytest.mark.parametrize("ty", _UINT, ids=lambda t: t[1].__name__)
def test_unsigned_binary_matches_onnxruntime(op: str, ty) -> None:
    rng = np.random.default_rng(0)
    hi = np.iinfo(ty[1]).max
    a = rng.integers(0, hi, 64, dtype=ty[1], endpoint=True)
    b = rng.integers(1, hi, 64, dtype=ty[1], endpoint=True)
    b[:16] = rng.integers(1, 50, 16, dtype=ty[1])
    a[:4], b[4:8] = hi, hi
    out = TensorProto.BOOL if op in ("Greater", "Less", "GreaterOrEqual", "LessOrEqual",
                                     "Equal") else ty[0]
    model = _model(op, [("a", ty[0], [64]), ("b", ty[0], [64])], out, 13 if "Or" not in op else 16)
    ref = _ort(model, {"a": a, "b": b})
    got = convert_onnx(model)(torch.from_numpy(a), torch.from_numpy(b))
    np.testing.assert_array_equal(got.numpy(), ref)


def test_bitwise_not_uint16_wraps() -> None:
    x = np.array([0, 1, 65535, 1234], np.uint16)
    model = _model("BitwiseNot", [("x", TensorProto.UINT16, [4])], TensorProto.UINT16, 18)
    got = convert_onnx(model)(torch.from_numpy(x))
    np.testing.assert_array_equal(got.numpy(), ~x)


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bitshift_uint64_is_logical(direction: str) -> None:
    x = np.array([2**64 - 1, 2**63, 12345, 1], np.uint64)
    s = np.array([0, 1, 7, 63], np.uint64)
    model = _model("BitShift", [("x", TensorProto.UINT64, [4]), ("s", TensorProto.UINT64, [4])],
                   TensorProto.UINT64, 11, direction=direction)
    got = convert_onnx(model)(torch.from_numpy(x), torch.from_numpy(s))
    np.testing.assert_array_equal(got.numpy(), x << s if direction == "LEFT" else x >> s)


@pytest.mark.parametrize("op", ["Celu", "Elu"])
def test_celu_elu_match_onnxruntime(op: str) -> None:
    x = np.linspace(-4, 4, 33, dtype=np.float32)
    model = _model(op, [("x", TensorProto.FLOAT, [33])], TensorProto.FLOAT, 12, alpha=1.5)
    ref = _ort(model, {"x": x})
    got = convert_onnx(model)(torch.from_numpy(x))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6, atol=1e-6)
