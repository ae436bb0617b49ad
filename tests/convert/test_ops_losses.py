"""NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss: node-suite cases and onnxruntime parity."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from onnx_conformance import run_porter  # noqa: E402

from porter.convert import convert_onnx  # noqa: E402

OPS = {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"}


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases() if c.name.startswith(("test_nllloss", "test_sce_"))]


CASES = _cases()


def test_selection_covers_both_ops() -> None:
    assert len(CASES) >= 100
    assert all(OPS & {n.op_type for n in c.model.graph.node} or c.name.endswith("_expanded")
               for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


def _loss_model(op: str, reduction: str, weighted: bool, ignore_index: int | None,
                log_prob: bool = False):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 4]),
              helper.make_tensor_value_info("t", TensorProto.INT64, [3, 4])]
    names = ["x", "t"]
    if weighted:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [5]))
        names.append("w")
    outs = ["y", "lp"] if log_prob else ["y"]
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2, -1])
def test_matches_onnxruntime(op, reduction, weighted, ignore_index) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    if op == "NegativeLogLikelihoodLoss":
        x = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    t = rng.integers(0, 5, (3, 4)).astype(np.int64)
    if ignore_index is not None:
        t[0, :2] = ignore_index
    feeds = {"x": x, "t": t}
    if weighted:
        feeds["w"] = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    log_prob = op == "SoftmaxCrossEntropyLoss"
    model = _loss_model(op, reduction, weighted, ignore_index, log_prob)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    with torch.no_grad():
        out = convert_onnx(model)(*[torch.from_numpy(v) for v in feeds.values()])
    outs = list(out) if isinstance(out, tuple) else [out]
    assert len(outs) == len(ref)
    for got, exp in zip(outs, ref):
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-5, atol=1e-6)
