"""convert_onnx on small graphs built with onnx.helper, checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from porter.converters import convert_onnx, lookup
from porter.converters.registry import converter
from porter.errors import UnsupportedOpError

RNG = np.random.default_rng(0)


def _model(opset: int = 18, named: bool = True, weights_as_constants: bool = False):
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    fc = RNG.standard_normal((8, 4)).astype(np.float32)
    nm = (lambda s: s) if named else (lambda s: "")
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name=nm("/backbone/conv1/Conv"),
                         pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name=nm("/backbone/act/Relu")),
        helper.make_node("Shape", ["r"], ["s"], name=nm("/head/Shape")),
        helper.make_node("Resize", ["r", "", "", "s2"], ["u"], name=nm("/head/Resize"),
                         mode="linear"),
        helper.make_node("ReduceMean", ["u", "axes"], ["m"], keepdims=0,
                         name=nm("/head/pool/ReduceMean")),
        helper.make_node("MatMul", ["m", "fc"], ["y"], name=nm("/head/fc/MatMul")),
        helper.make_node("Gather", ["s", "zero"], ["n"], name=nm("/head/Gather")),
        helper.make_node("Concat", ["s", "one"], ["s1"], axis=0, name=nm("/head/Concat")),
        helper.make_node("Slice", ["s1", "zero", "four"], ["s2_"], name=nm("/head/Slice")),
        helper.make_node("Mul", ["s2_", "scale"], ["s2"], name=nm("/head/Mul")),
    ]
    # topological order: s2 must exist before Resize
    nodes = nodes[:3] + nodes[6:] + nodes[3:6]
    consts = {"w": w, "b": b, "fc": fc, "axes": np.array([2, 3], np.int64),
              "zero": np.array([0], np.int64), "one": np.array([1], np.int64),
              "four": np.array([4], np.int64), "scale": np.array([1, 1, 2, 2], np.int64)}
    inits = []
    if weights_as_constants:
        nodes = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k))
                 for k, v in consts.items()] + nodes
    else:
        inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    return model


def _ort(model, x):
    return ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})


@pytest.mark.parametrize("opset", [18, 19, 21])
@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 12, 20)])
def test_matches_onnxruntime_with_dynamic_shapes(opset, shape) -> None:
    model = _model(opset)
    module = convert_onnx(model)
    x = RNG.standard_normal(shape).astype(np.float32)
    y, n = module(torch.from_numpy(x))
    ref_y, ref_n = _ort(model, x)
    assert np.abs(y.detach().numpy() - ref_y).max() <= 1e-5
    assert int(n.reshape(-1)[0]) == int(ref_n.reshape(-1)[0]) == shape[0]


def test_parameter_names_come_from_node_names() -> None:
    names = set(dict(convert_onnx(_model()).named_parameters()))
    assert {"backbone.conv1.weight", "backbone.conv1.bias", "head.fc.weight"} <= names
    assert not any("initializer" in n or n[0].isdigit() for n in names)


def test_anonymous_nodes_are_named_by_op_and_order() -> None:
    names = set(dict(convert_onnx(_model(named=False)).named_parameters()))
    assert {"conv_0.weight", "conv_0.bias", "mat_mul_0.weight"} <= names


def test_constant_node_weights_become_parameters() -> None:
    model = _model(weights_as_constants=True)
    module = convert_onnx(model)
    params = dict(module.named_parameters())
    assert params["backbone.conv1.weight"].shape == (8, 3, 3, 3)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    y, _ = module(torch.from_numpy(x))
    assert np.abs(y.detach().numpy() - _ort(model, x)[0]).max() <= 1e-5


def test_path_and_source_inputs(tmp_path) -> None:
    from porter.importers.onnx import load_onnx

    model = _model()
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    ref = _ort(model, x)[0]
    for src in (str(path), path, load_onnx(path)):
        y, _ = convert_onnx(src)(torch.from_numpy(x))
        assert np.abs(y.detach().numpy() - ref).max() <= 1e-5


def test_unsupported_op_raises_typed_error() -> None:
    node = helper.make_node("StringNormalizer", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.STRING, [2])], [helper.make_tensor_value_info("y", TensorProto.STRING,
                                                                       [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpError) as err:
        convert_onnx(model)
    assert (err.value.op_type, err.value.opset) == ("StringNormalizer", 13)


def test_newer_opset_resolves_to_schema_since_version() -> None:
    # Relu's schema last changed at 14: opset 17 must use the same converter
    assert lookup("Relu", 17) is lookup("Relu", 14)
    with pytest.raises(UnsupportedOpError):
        lookup("NoSuchOp", 17)


def test_duplicate_registration_fails() -> None:
    with pytest.raises(RuntimeError, match="duplicate"):
        converter("Relu", since=(14,))(lambda node, ctx: None)


def test_backward_gives_every_parameter_a_gradient() -> None:
    module = convert_onnx(_model()).train()
    x = torch.from_numpy(RNG.standard_normal((2, 3, 8, 8)).astype(np.float32))
    y, _ = module(x)
    y.square().sum().backward()
    params = dict(module.named_parameters())
    assert params and all(p.grad is not None and p.grad.abs().sum() > 0 for p in params.values())


def test_round_trip_through_torch_onnx_export(tmp_path) -> None:
    model = _model()
    module = convert_onnx(model)
    x = RNG.standard_normal((1, 3, 8, 8)).astype(np.float32)
    path = tmp_path / "rt.onnx"
    torch.onnx.export(module, (torch.from_numpy(x),), str(path), dynamo=False,
                      input_names=["x"], opset_version=18)
    got = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    assert np.abs(got - _ort(model, x)[0]).max() <= 1e-5
