"""Signal ops (DFT, STFT, windows, MelWeightMatrix): node-suite cases and onnxruntime parity."""

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

# float32 rounding noise in the expected outputs (1.9e-7 where the exact value is 0, atol 1e-7)
_PRECISION_GAPS = {"test_dft_inverse", "test_dft_inverse_opset19"}


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    ops = re.compile(r"^test_(dft|stft|hannwindow|hammingwindow|blackmanwindow|melweightmatrix)")
    return [c for c in cases if ops.match(c.name)]


CASES = [pytest.param(c, id=c.name, marks=pytest.mark.xfail(
    reason="expected output carries float32 FFT rounding noise", strict=True))
    if c.name in _PRECISION_GAPS else pytest.param(c, id=c.name) for c in _cases()]


@pytest.mark.parametrize("case", CASES)
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


def _parity(node, inputs: dict[str, np.ndarray], out_type: int, opset: int, atol: float = 1e-5):
    import onnxruntime as ort

    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_tensor_value_info(node.output[0], out_type, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    ref = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    with torch.no_grad():
        got = convert_onnx(model)(*[torch.from_numpy(v) for v in inputs.values()])
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-4, atol=atol)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("inverse,onesided", [(0, 0), (0, 1), (1, 0)])
def test_dft_matches_onnxruntime(opset: int, inverse: int, onesided: int) -> None:
    x = np.random.default_rng(0).standard_normal((2, 8, 6, 1 if onesided else 2)).astype(np.float32)
    inputs = {"x": x}
    attrs = {"inverse": inverse, "onesided": onesided}
    if opset >= 20:
        inputs["axis"] = np.array(1, dtype=np.int64)
        node = helper.make_node("DFT", ["x", "", "axis"], ["y"], **attrs)
    else:
        node = helper.make_node("DFT", ["x"], ["y"], axis=1, **attrs)
    _parity(node, inputs, TensorProto.FLOAT, opset)


def test_stft_matches_onnxruntime() -> None:
    rng = np.random.default_rng(1)
    inputs = {"s": rng.standard_normal((2, 64, 1)).astype(np.float32),
              "step": np.array(8, dtype=np.int64),
              "w": np.hanning(16).astype(np.float32)}
    node = helper.make_node("STFT", ["s", "step", "w"], ["y"], onesided=1)
    _parity(node, inputs, TensorProto.FLOAT, 17, atol=1e-4)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_window_matches_onnxruntime(op: str, periodic: int) -> None:
    node = helper.make_node(op, ["n"], ["y"], periodic=periodic,
                            output_datatype=TensorProto.DOUBLE)
    _parity(node, {"n": np.array(12, dtype=np.int64)}, TensorProto.DOUBLE, 17)


def test_mel_weight_matrix_matches_onnxruntime() -> None:
    names = ["bins", "dft", "rate", "lo", "hi"]
    vals = [np.array(8, np.int64), np.array(64, np.int64), np.array(16000, np.int64),
            np.array(0.0, np.float32), np.array(8000.0, np.float32)]
    node = helper.make_node("MelWeightMatrix", names, ["y"])
    _parity(node, dict(zip(names, vals)), TensorProto.FLOAT, 17)
