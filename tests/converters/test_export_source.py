"""export_source writes a standalone model.py that matches onnxruntime in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

from porter.converters import export_source

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_convert import _model  # noqa: E402

CHECK = """
import json, sys
import numpy as np, torch
from safetensors.torch import load_file
sys.path.insert(0, sys.argv[1])
from model import Net
m = Net(); m.load_state_dict(load_file(sys.argv[1] + "/model.safetensors")); m.eval()
x = np.load(sys.argv[2])
with torch.no_grad():
    y, n = m(torch.from_numpy(x))
np.save(sys.argv[3], y.numpy())
print(json.dumps(sorted(k for k in sys.modules if k.split(".")[0] == "porter")))
"""


def test_generated_source_matches_onnxruntime(tmp_path) -> None:
    model = _model()
    path = export_source(model, tmp_path / "out", class_name="Net")
    src = path.read_text()
    assert "class Net(nn.Module)" in src and "porter" not in src.split('"""', 2)[2]
    assert "self.backbone.conv1 = nn.Conv2d(" in src
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    res = subprocess.run([sys.executable, "-c", CHECK, str(path.parent), str(tmp_path / "x.npy"),
                          str(tmp_path / "y.npy")], capture_output=True, text=True, check=True)
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []  # porter never imported
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    assert np.abs(np.load(tmp_path / "y.npy") - ref).max() <= 1e-5


def test_control_flow_model_is_written_and_loads(tmp_path) -> None:
    """An If (control flow with subgraphs) is written to model.py (each branch a class of its
    own) and the output loads and takes either branch as onnxruntime does."""
    import onnx
    import torch
    from onnx import TensorProto, helper

    import porter
    from porter.pipeline import convert

    def branch(op: str, name: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x"], [name])], name, [],
                                 [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2, 3])])

    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu", "t"),
                              else_branch=branch("Neg", "e"))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = tmp_path / "if.onnx"
    onnx.save(model, path)
    res = convert(path, verify="cpu", out=tmp_path / "out")
    assert res.manifest["parity"]["passed"]
    code = (tmp_path / "out" / "model.py").read_text()
    assert "class If(nn.Module)" in code and "class _Graph2(nn.Module)" in code
    loaded = porter.load(tmp_path / "out", trust_code=True)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for sign in (1.0, -1.0):
        x = (sign * np.abs(np.random.default_rng(0).normal(size=(2, 3)))).astype(np.float32)
        with torch.no_grad():
            got = loaded(torch.from_numpy(x)).numpy()
        np.testing.assert_array_equal(got, sess.run(None, {"x": x})[0])
