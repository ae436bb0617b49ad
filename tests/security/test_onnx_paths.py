"""ONNX external data is read only from inside the model's folder (issue 10, case 5).

A Constant node's tensor, or an initializer inside an ``If`` subgraph, naming ``secret`` used to
be resolved by the onnx library against the *current directory*: ``./secret`` ended up in
``model.safetensors``. Hard links are refused like symlinks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.security.conftest import assert_one_line_error, porter_cli

pytestmark = pytest.mark.slow  # each case runs a full `porter convert` in a child

SECRET = np.array([1.25e-3, 7.5e4, -3.0e2, 4.2e-1], "float32")  # distinctive bytes


def _external(name: str, location: str) -> TensorProto:
    t = helper.make_tensor(name, TensorProto.FLOAT, [4], np.zeros(4, "float32"))
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _io() -> tuple[list, list]:
    return ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])


def _constant_model(location: str) -> onnx.ModelProto:
    nodes = [helper.make_node("Constant", [], ["c"], value=_external("c_value", location)),
             helper.make_node("Add", ["x", "c"], ["y"])]
    return helper.make_model(helper.make_graph(nodes, "g", *_io()), ir_version=8,
                             opset_imports=[helper.make_opsetid("", 17)])


def _if_model(location: str) -> onnx.ModelProto:
    out = [helper.make_tensor_value_info("t", TensorProto.FLOAT, [4])]
    then = helper.make_graph([helper.make_node("Identity", ["w"], ["t"])], "then", [], out,
                             [_external("w", location)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["t"])], "else", [], out)
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["t0"], then_branch=then, else_branch=other),
             helper.make_node("Add", ["x", "t0"], ["y"])]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    return helper.make_model(helper.make_graph(nodes, "g", *_io(), [zero]), ir_version=8,
                             opset_imports=[helper.make_opsetid("", 17)])


def _assert_secret_not_copied(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and p.name != "secret":
            assert SECRET.tobytes() not in p.read_bytes(), p


@pytest.mark.parametrize("build", [_constant_model, _if_model])
@pytest.mark.parametrize("location,match", [
    ("secret", "not found beside the model"),           # resolved against the cwd before
    ("../cwd/secret", "leaves the model's folder"),
    (os.sep + "secret", "absolute"),
])
def test_external_data_outside_the_folder_is_refused(arena, build, location: str,
                                                     match: str) -> None:
    model_dir, cwd = arena
    (cwd / "secret").write_bytes(SECRET.tobytes())
    path = model_dir / "m.onnx"
    onnx.save(build(location), str(path))
    proc = porter_cli("convert", str(path), "--out", str(cwd / "out"), "-q", cwd=cwd,
                      timeout=300)
    assert_one_line_error(proc, match)
    _assert_secret_not_copied(cwd)


def test_hard_linked_external_data_is_refused(arena) -> None:
    model_dir, cwd = arena
    (cwd / "secret").write_bytes(SECRET.tobytes())
    os.link(cwd / "secret", model_dir / "weights.bin")
    path = model_dir / "m.onnx"
    onnx.save(_constant_model("weights.bin"), str(path))
    proc = porter_cli("convert", str(path), "--out", str(cwd / "out"), "-q", cwd=cwd,
                      timeout=300)
    assert_one_line_error(proc, "hard link")
    _assert_secret_not_copied(cwd)


def test_external_data_inside_the_folder_still_works(arena) -> None:
    """The same models with the data beside them convert, and the Constant is the file's."""
    model_dir, cwd = arena
    (model_dir / "weights.bin").write_bytes(SECRET.tobytes())
    path = model_dir / "m.onnx"
    onnx.save(_constant_model("weights.bin"), str(path))
    proc = porter_cli("convert", str(path), "--out", str(cwd / "out"), "-q", cwd=cwd,
                      timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert SECRET.tobytes() in (cwd / "out" / "model.safetensors").read_bytes()
