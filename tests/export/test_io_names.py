"""Names TorchScript's exporter refuses, renaming values in an ONNX graph without merging two,
and generic outputs of foreign ONNX files exported again (``--to onnx``) with their names."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from porter.export.io_names import rename_values, stand_ins, value_names
from porter.pipeline import convert


def test_stand_ins_only_for_refused_names_and_unique():
    got = stand_ins(["x", "0", "35", "porter_io_35"])
    assert set(got) == {"0", "35"}
    assert got["35"] != "porter_io_35" and got["35"].startswith("porter_io_35")
    assert len(set(got.values())) == 2
    assert stand_ins(["input", "output.1", "a:0"]) == {}


def _graph_with_subgraph() -> onnx.GraphProto:
    then = helper.make_graph([helper.make_node("Identity", ["a"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])])
    other = helper.make_graph([helper.make_node("Neg", ["a"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1])])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("Abs", ["x"], ["35"]),   # a value already named like the target
             helper.make_node("ReduceSum", ["35"], ["c"], keepdims=1),
             helper.make_node("Cast", ["c"], ["cond"], to=TensorProto.BOOL),
             helper.make_node("Squeeze", ["cond"], ["cond0"]),
             helper.make_node("If", ["cond0"], ["porter_io_35"], then_branch=then,
                              else_branch=other)]
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [1])],
                             [helper.make_tensor_value_info("porter_io_35", TensorProto.FLOAT,
                                                            [1])])


def test_rename_moves_an_existing_bearer_aside_and_reaches_subgraphs():
    import onnxruntime as ort

    graph = _graph_with_subgraph()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = {"x": np.array([-2.0], np.float32)}
    before = ort.InferenceSession(model.SerializeToString()).run(None, x)
    rename_values(model.graph, {"porter_io_35": "35", "a": "b"})
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["35"]
    names = value_names(model.graph)
    assert "a" not in names and "b" in names and "35__1" in names  # the old "35" moved aside
    then = model.graph.node[-1].attribute[0].g
    assert list(then.node[0].input) == ["b"]  # an outer value used inside the If branch
    after = ort.InferenceSession(model.SerializeToString()).run(None, x)
    np.testing.assert_array_equal(before[0], after[0])


def _onnx(tmp_path, nodes, inputs, outputs, inits=(), opset=13, name="m"):
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


def _round_trip(tmp_path, path, target):
    """Foreign ONNX -> generic torch output -> ONNX again; the second file's graph."""
    out = tmp_path / "torch_out"
    convert(path, to="torch", verify="cpu", out=out)
    again = convert(out, to="onnx", target=target, out=tmp_path / "onnx_out", trust_code=True)
    assert again.manifest["parity"]["passed"]
    return onnx.load(tmp_path / "onnx_out" / "model.onnx").graph


def test_numeric_io_names_survive_the_atc_export(tmp_path):
    """What torch.onnx wrote without output_names ("35"): the exporter refuses such names, the
    ATC file still carries them."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3],
                           rng.standard_normal((4, 3, 3, 3)).astype(np.float32).ravel())
    nodes = [helper.make_node("Conv", ["0", "w"], ["12"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["12"], ["35"]),
             helper.make_node("Relu", ["12"], ["36"])]
    path = _onnx(tmp_path, nodes,
                 [helper.make_tensor_value_info("0", TensorProto.FLOAT, [1, 3, 16, 16])],
                 [helper.make_tensor_value_info("35", TensorProto.FLOAT, [1, 4, 16, 16]),
                  helper.make_tensor_value_info("36", TensorProto.FLOAT, [1, 4, 16, 16])],
                 [w])
    graph = _round_trip(tmp_path, path, "atc")
    assert [i.name for i in graph.input] == ["0"]
    assert [o.name for o in graph.output] == ["35", "36"]


@pytest.mark.parametrize("op, attrs", [("Elu", {"alpha": 0.7}), ("Celu", {"alpha": 1.5})])
def test_exponential_units_export(tmp_path, op, attrs):
    """Elu and Celu convert to ops torch.onnx can export (it has no expm1)."""
    nodes = [helper.make_node(op, ["x"], ["y"], **attrs)]
    path = _onnx(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 [2, 5, 7])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 7])], opset=13)
    graph = _round_trip(tmp_path, path, "atc")
    assert op in {n.op_type for n in graph.node}


def test_topk_exports_as_topk(tmp_path):
    """TopK runs as a stable sort in torch (ONNX's tie order); traced for export it is ONNX
    TopK again, whose ties are ONNX's by definition."""
    k = helper.make_tensor("k", TensorProto.INT64, [1], [3])
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=1)]
    path = _onnx(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 9])],
                 [helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 3]),
                  helper.make_tensor_value_info("i", TensorProto.INT64, [2, 3])], [k])
    graph = _round_trip(tmp_path, path, "onnxruntime")
    assert "TopK" in {n.op_type for n in graph.node}


def test_lstm_exports_with_integer_gather_indices(tmp_path):
    """A reverse-direction LSTM reorders its steps with a gather; traced, the step indices
    must stay integers (a float fill made GatherElements fail onnx.checker)."""
    rng = np.random.default_rng(1)
    hid, inp = 4, 3

    def t(name, shape):
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (0.3 * rng.standard_normal(shape)).astype(np.float32).ravel())

    inits = [t("W", [2, 4 * hid, inp]), t("R", [2, 4 * hid, hid]), t("B", [2, 8 * hid])]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hid,
                              direction="bidirectional")]
    path = _onnx(tmp_path, nodes,
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 2, inp])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [5, 2, 2, hid])], inits)
    graph = _round_trip(tmp_path, path, "onnxruntime")
    assert [o.name for o in graph.output] == ["y"]
