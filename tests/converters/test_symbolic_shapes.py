"""Shape arithmetic runs on python ints (ShapeValue) and gives exactly what onnxruntime gives."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from porter.converters import convert_onnx
from porter.converters.symbolic import ShapeValue, shape_tensor

I64 = TensorProto.INT64


def _c(name: str, values, dtype=np.int64):
    return numpy_helper.from_array(np.array(values, dtype=dtype), name)


def _graph():
    """x [N, C, H, W] (all dynamic) -> nine outputs, each from a different shape chain."""
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["s"]),
        n("Shape", ["x"], ["s_mid"], start=1, end=-1),                      # [C, H]
        n("Gather", ["s", "i_last"], ["w"], axis=0),                       # scalar W
        n("Gather", ["s", "i_01"], ["nc"], axis=0),                        # [N, C]
        n("Slice", ["s", "k2", "kbig"], ["hw"]),                           # [H, W]
        n("Mul", ["hw", "two"], ["hw2"]),
        n("Concat", ["nc", "hw2"], ["sizes"], axis=0),
        n("Resize", ["x", "", "", "sizes"], ["up"], mode="nearest"),        # sizes from shapes
        n("Unsqueeze", ["w", "ax0"], ["w1"]),
        n("Concat", ["nc", "minus1", "w1"], ["flat_shape"], axis=0),
        n("Reshape", ["x", "flat_shape"], ["flat"]),                        # [N, C, H, W]
        n("Sub", ["w", "ten"], ["w_minus"]),                                # may be negative
        n("Div", ["w_minus", "three"], ["w_div"]),                          # truncates to zero
        n("Cast", ["hw"], ["hw32"], to=TensorProto.INT32),
        n("Size", ["x"], ["numel"]),
        n("Cast", ["w"], ["w_f"], to=TensorProto.FLOAT),                    # leaves ints: tensor
        n("Mul", ["w_f", "half"], ["w_half"]),
        n("Squeeze", ["w1", "ax0"], ["w_again"]),
        n("ConstantOfShape", ["hw"], ["zeros"],
          value=numpy_helper.from_array(np.array([1.5], np.float32))),
    ]
    inits = [_c("i_last", -1), _c("i_01", [0, 1]), _c("k2", [2]), _c("kbig", [2**62]),
             _c("two", [2]), _c("ax0", [0]), _c("minus1", [-1]), _c("ten", 10), _c("three", 3),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    outs = [("up", TensorProto.FLOAT), ("flat", TensorProto.FLOAT), ("s_mid", I64),
            ("w_div", I64), ("hw32", TensorProto.INT32), ("numel", I64),
            ("w_half", TensorProto.FLOAT), ("w_again", I64), ("zeros", TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "shape_chains",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                         ["n", "c", "h", "w"])],
                          [helper.make_tensor_value_info(o, t, None) for o, t in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


@pytest.fixture(scope="module")
def model():
    return _graph()


def test_shape_chains_match_onnxruntime_exactly(model) -> None:
    module = convert_onnx(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    rng = np.random.default_rng(0)
    for shape in [(1, 2, 3, 4), (2, 3, 5, 17), (1, 1, 2, 9)]:
        x = rng.standard_normal(shape).astype(np.float32)
        ref = dict(zip(names, sess.run(None, {"x": x})))
        with torch.no_grad():
            got = dict(zip(names, module(torch.from_numpy(x))))
        for name in names:
            g = got[name]
            assert isinstance(g, torch.Tensor), name  # outputs are tensors, never ShapeValues
            assert g.numpy().dtype == ref[name].dtype and g.shape == ref[name].shape, name
            np.testing.assert_array_equal(g.numpy(), ref[name], err_msg=name)
        assert ref["w_div"] == int((shape[3] - 10) / 3)  # truncation toward zero, not floor


def test_which_nodes_run_on_ints(model) -> None:
    module = convert_onnx(model)
    sym = {st.node: st.symbolic is not None for st in module._steps}
    kinds = {st.node: st.op_type for st in module._steps}
    on_ints = sorted(kinds[k] for k, v in sym.items() if v)
    assert on_ints == sorted(["Shape", "Shape", "Gather", "Gather", "Slice", "Mul", "Concat",
                              "Unsqueeze", "Concat", "Sub", "Div", "Cast", "Size", "Squeeze"])
    # the float Cast and what follows it, and every op on x itself, stay tensor ops
    assert not any(sym[k] for k in kinds if kinds[k] in ("Resize", "Reshape", "ConstantOfShape"))
    assert [st.op_type for st in module._steps if st.materialize] == ["Cast"]


def test_recorded_intermediates_are_tensors(model) -> None:
    module = convert_onnx(model)
    x = torch.randn(2, 3, 5, 17)
    rec = module.run_with_intermediates(x)
    assert torch.equal(rec["s"], torch.tensor([2, 3, 5, 17]))
    assert torch.equal(rec["sizes"], torch.tensor([2, 3, 10, 34]))
    assert rec["w"].dim() == 0 and int(rec["w"]) == 17


def test_shape_value_tensor() -> None:
    assert torch.equal(shape_tensor(ShapeValue([4], scalar=True)), torch.tensor(4))
    t = shape_tensor(ShapeValue([1, 2], dtype=torch.int32))
    assert t.dtype == torch.int32 and t.tolist() == [1, 2]
    x = torch.ones(2)
    assert shape_tensor(x) is x


def test_generated_source_keeps_shape_arithmetic_symbolic(model, tmp_path) -> None:
    """model.py does the same int arithmetic: it matches the plan and torch.export keeps the
    sizes symbolic, so the exported program runs at sizes it was not traced at."""
    import importlib.util

    from torch.export import Dim

    from porter.converters.codegen import render_source

    module = convert_onnx(model)
    path = tmp_path / "gen_model.py"
    path.write_text(render_source(module, class_name="Net"))
    assert "= sym_shape(x" in path.read_text()  # forward reads sizes, not shape tensors
    spec = importlib.util.spec_from_file_location("gen_model", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    net = gen.Net()
    net.load_state_dict(module.state_dict())
    net.eval()
    x = torch.randn(2, 3, 5, 17)
    with torch.no_grad():
        ep = torch.export.export(net, (x,), dynamic_shapes=({0: Dim.AUTO, 1: Dim.AUTO,
                                                             2: Dim.AUTO, 3: Dim.AUTO},))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = np.random.default_rng(5).standard_normal((3, 2, 4, 13)).astype(np.float32)
    ref = sess.run(None, {"x": y})
    with torch.no_grad():
        for r, a, b in zip(ref, net(torch.from_numpy(y)), ep.module()(torch.from_numpy(y))):
            np.testing.assert_array_equal(a.numpy(), r)
            np.testing.assert_array_equal(b.numpy(), r)
