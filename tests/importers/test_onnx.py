"""ONNX importer: lazy tensors bit-exact with onnx's own loader, safe external data, clear errors."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import porter
from porter.errors import FormatError, UnsafeSourceError


def _model(with_constant: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    if with_constant:
        c = numpy_helper.from_array(rng.standard_normal((1, 4, 1, 1)).astype(np.float16), "cw")
        nodes += [helper.make_node("Constant", [], ["scale"], value=c),
                  helper.make_node("Cast", ["scale"], ["scale32"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", ["y", "scale32"], ["z"])]
    out = "z" if with_constant else "y"
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_initializers_and_constant_weights_bit_exact(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_model(), path)
    src = porter.open(path)
    assert src.format == "onnx" and src.meta["opset"] == 17
    ref = onnx.load(path)
    expected = {t.name: numpy_helper.to_array(t) for t in ref.graph.initializer}
    expected["scale"] = numpy_helper.to_array(ref.graph.node[1].attribute[0].t)
    assert set(src.tensors) == set(expected)
    for name, want in expected.items():
        got = src.tensors[name].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
        assert not got.flags.writeable
    assert src.tensors["scale"].kind == "constant" and src.tensors["w"].kind == "initializer"
    assert src.graph.number_of_nodes() == 4
    assert [d["op_type"] for _, d in sorted(src.graph.nodes(data=True),
                                            key=lambda kv: kv[1]["index"])] == \
        ["Conv", "Constant", "Cast", "Mul"]
    assert src.meta["inputs"][0]["shape"] == ["n", 3, "h", "w"]


def test_external_data_read_bit_exact(tmp_path):
    model = _model(with_constant=False)
    path = tmp_path / "ext.onnx"
    onnx.save(model, path, save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    src = porter.open(path)
    ref = onnx.load(path)  # onnx resolves the external data itself
    for t in ref.graph.initializer:
        assert src.tensors[t.name].numpy().tobytes() == numpy_helper.to_array(t).tobytes()


@pytest.mark.parametrize("location", ["/etc/passwd", "../outside.bin", "sub/../../outside.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    model = _model(with_constant=False)
    (tmp_path / "outside.bin").write_bytes(b"\0" * 1024)
    folder = tmp_path / "model"
    folder.mkdir()
    t = model.graph.initializer[0]
    raw = t.raw_data or numpy_helper.to_array(t).tobytes()
    t.ClearField("raw_data")
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        t.external_data.add(key=k, value=v)
    path = folder / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(UnsafeSourceError):
        porter.open(path)


def test_external_data_symlink_leading_out_is_refused(tmp_path):
    model = _model(with_constant=False)
    folder = tmp_path / "model"
    folder.mkdir()
    onnx.save(model, folder / "m.onnx", save_as_external_data=True, location="w.bin",
              size_threshold=0)
    outside = tmp_path / "secret.bin"
    os.replace(folder / "w.bin", outside)
    os.symlink(outside, folder / "w.bin")
    with pytest.raises(UnsafeSourceError, match="leads out"):
        porter.open(folder / "m.onnx")


def test_truncated_external_data_is_a_format_error(tmp_path):
    path = tmp_path / "ext.onnx"
    onnx.save(_model(with_constant=False), path, save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    data = (tmp_path / "weights.bin").read_bytes()
    (tmp_path / "weights.bin").write_bytes(data[:10])
    src = porter.open(path)
    with pytest.raises(FormatError, match="truncated"):
        for ref in src.tensors.values():
            ref.numpy()


@pytest.mark.parametrize("mutate", ["truncate", "garbage", "empty"])
def test_corrupt_files_give_format_errors(tmp_path, mutate):
    good = _model().SerializeToString()
    data = {"truncate": good[: len(good) // 2], "garbage": b"\x08\x07" + os.urandom(64),
            "empty": b""}[mutate]
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(FormatError):
        porter.open(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        porter.open(tmp_path / "nope.onnx")
    odd = tmp_path / "notes.txt"
    odd.write_text("hello")
    with pytest.raises(FormatError, match="unknown format"):
        porter.open(odd)
