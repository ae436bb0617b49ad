"""Attention-family converters: every node-suite case, plus hand-built graphs vs onnxruntime."""

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

from porter.convert import convert_onnx  # noqa: E402

OPS = {"Attention", "RotaryEmbedding", "SwiGLU"}
# bf16 cases whose reference rounds every partial softmax sum to bf16; torch accumulates in fp32
GAPS = re.compile(r"^test_attention_(4d_causal_bf16|4d_padded_kv_bf16|4d_causal_padded_kv_bf16"
                  r"|3d_causal_bf16)$")


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    return [c for c in cases if len(c.model.graph.node) == 1
            and c.model.graph.node[0].op_type in OPS]


CASES = _cases()


def test_selection() -> None:
    assert len(CASES) >= 100


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    if GAPS.match(case.name):
        pytest.xfail("reference rounds each partial bf16 sum")
    assert run_porter(case) == "pass"


def _model(op: str, inputs: list[tuple[str, int, list]], outputs: list[tuple[str, int, list]],
           opset: int, **attrs):
    node = helper.make_node(op, [n for n, _, _ in inputs], [n for n, _, _ in outputs], **attrs)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info(*i) for i in inputs],
                              [helper.make_tensor_value_info(*o) for o in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


def _vs_ort(model, feeds: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as exc:  # an op onnxruntime does not implement at this opset
        pytest.skip(f"onnxruntime: {exc}")
    expected = sess.run(None, feeds)
    with torch.no_grad():
        got = convert_onnx(model)(*[torch.from_numpy(v) for v in feeds.values()])
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e, rtol=1e-4, atol=atol)


F = TensorProto.FLOAT


@pytest.mark.parametrize("causal", [0, 1])
def test_attention_gqa_3d_vs_ort(causal: int) -> None:
    rng = np.random.default_rng(0)
    b, s, kv, hq, hk, d = 2, 3, 5, 4, 2, 8
    feeds = {"q": rng.standard_normal((b, s, hq * d), np.float32),
             "k": rng.standard_normal((b, kv, hk * d), np.float32),
             "v": rng.standard_normal((b, kv, hk * d), np.float32)}
    model = _model("Attention", [("q", F, [b, s, hq * d]), ("k", F, [b, kv, hk * d]),
                                 ("v", F, [b, kv, hk * d])], [("y", F, None)], 23,
                   q_num_heads=hq, kv_num_heads=hk, is_causal=causal)
    _vs_ort(model, feeds)


def test_rotary_embedding_vs_ort() -> None:
    rng = np.random.default_rng(0)
    b, h, s, d = 2, 3, 4, 8
    feeds = {"x": rng.standard_normal((b, h, s, d), np.float32),
             "cos": rng.standard_normal((10, d // 2), np.float32),
             "sin": rng.standard_normal((10, d // 2), np.float32),
             "pos": rng.integers(0, 10, (b, s)).astype(np.int64)}
    model = _model("RotaryEmbedding", [("x", F, [b, h, s, d]), ("cos", F, [10, d // 2]),
                                       ("sin", F, [10, d // 2]),
                                       ("pos", TensorProto.INT64, [b, s])],
                   [("y", F, None)], 23, interleaved=1)
    _vs_ort(model, feeds)
