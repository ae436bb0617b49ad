"""RNN / GRU / LSTM: every node-suite case, and hand-built graphs against onnxruntime."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from onnx_conformance import run_porter  # noqa: E402

from porter.converters import convert_onnx, export_source  # noqa: E402


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases()
                if re.match(r"^test_(simple_rnn|rnn|gru|lstm)_", c.name)]


CASES = _cases()


def test_selection() -> None:
    assert len(CASES) >= 18


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


_GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def _model(op: str, seq: int, batch: int, n_in: int, hid: int, direction: str, layout: int,
           seq_lens: bool, peephole: bool = False, **attrs):
    """A one-node graph with random weights; returns (model, feeds)."""
    rng = np.random.default_rng(0)
    n_dir = 2 if direction == "bidirectional" else 1
    g = _GATES[op] * hid
    inits = [numpy_helper.from_array(rng.standard_normal((n_dir, g, n_in)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal((n_dir, g, hid)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.standard_normal((n_dir, 2 * g)).astype(np.float32), "B")]
    x_shape = [batch, seq, n_in] if layout else [seq, batch, n_in]
    h_shape = [batch, n_dir, hid] if layout else [n_dir, batch, hid]
    feeds = {"X": rng.standard_normal(x_shape).astype(np.float32),
             "H0": rng.standard_normal(h_shape).astype(np.float32)}
    ins = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape),
           helper.make_tensor_value_info("H0", TensorProto.FLOAT, h_shape)]
    names = ["X", "W", "R", "B", "", "H0"]
    if seq_lens:
        feeds["L"] = rng.integers(1, seq + 1, batch).astype(np.int32)
        feeds["L"][0] = seq
        ins.append(helper.make_tensor_value_info("L", TensorProto.INT32, [batch]))
        names[4] = "L"
    outs = ["Y", "Y_h"]
    if op == "LSTM":
        feeds["C0"] = rng.standard_normal(h_shape).astype(np.float32)
        ins.append(helper.make_tensor_value_info("C0", TensorProto.FLOAT, h_shape))
        names.append("C0")
        outs.append("Y_c")
        if peephole:
            inits.append(numpy_helper.from_array(
                rng.standard_normal((n_dir, 3 * hid)).astype(np.float32), "P"))
            names.append("P")
    node = helper.make_node(op, names, outs, hidden_size=hid, direction=direction,
                            layout=layout, **attrs)
    graph = helper.make_graph([node], "g", ins,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    return model, feeds


CONFIGS = [
    ("RNN", "forward", 0, True, False, {}),
    ("RNN", "bidirectional", 1, True, False, {"activations": ["Relu", "LeakyRelu"],
                                              "activation_alpha": [0.3]}),
    ("RNN", "reverse", 0, True, False, {"clip": 0.7}),
    ("GRU", "forward", 0, True, False, {"linear_before_reset": 1}),
    ("GRU", "bidirectional", 0, True, False, {}),
    ("GRU", "reverse", 1, True, False, {"activations": ["HardSigmoid", "Softsign"],
                                        "activation_alpha": [0.3], "activation_beta": [0.4]}),
    ("LSTM", "forward", 0, True, True, {}),
    ("LSTM", "bidirectional", 1, True, True, {"clip": 1.5}),
    ("LSTM", "reverse", 0, True, False, {"input_forget": 1}),
    ("LSTM", "forward", 0, False, False, {"activations": ["Sigmoid", "Elu", "ScaledTanh"],
                                          "activation_alpha": [0.5, 0.8],
                                          "activation_beta": [1.2]}),
]


@pytest.mark.parametrize("op,direction,layout,seq_lens,peephole,attrs", CONFIGS,
                         ids=[f"{c[0]}-{c[1]}-l{c[2]}-{i}" for i, c in enumerate(CONFIGS)])
def test_matches_onnxruntime(op, direction, layout, seq_lens, peephole, attrs) -> None:
    ort = pytest.importorskip("onnxruntime")
    model, feeds = _model(op, 5, 3, 4, 6, direction, layout, seq_lens, peephole, **attrs)
    # onnxruntime only runs layout 0: give it the same weights and the transposed inputs
    ref_model, _ = _model(op, 5, 3, 4, 6, direction, 0, seq_lens, peephole, **attrs)
    ref_feeds = {k: (v.swapaxes(0, 1) if layout and v.ndim == 3 else v) for k, v in feeds.items()}
    sess = ort.InferenceSession(ref_model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, ref_feeds)
    if layout:  # Y (seq, dir, batch, hid) -> (batch, seq, dir, hid); states swap their first axes
        ref = [ref[0].transpose(2, 0, 1, 3)] + [r.swapaxes(0, 1) for r in ref[1:]]
    with torch.no_grad():
        got = convert_onnx(model)(*[torch.from_numpy(feeds[i.name]) for i in model.graph.input])
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-4, atol=1e-5)


def test_exported_source_matches(tmp_path) -> None:
    from safetensors.torch import load_file

    model, feeds = _model("LSTM", 4, 2, 3, 5, "bidirectional", 0, True, True)
    path = export_source(model, tmp_path, class_name="Net")
    ns: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), ns)  # noqa: S102
    net = ns["Net"]()
    net.load_state_dict(load_file(tmp_path / "model.safetensors"))
    args = [torch.from_numpy(feeds[i.name]) for i in model.graph.input]
    with torch.no_grad():
        for g, w in zip(net(*args), convert_onnx(model)(*args)):
            torch.testing.assert_close(g, w)
