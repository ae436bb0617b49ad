"""Generated ``model.py`` is data-safe (issue 10, case 2): hostile names and attributes from an
ONNX file become inert literals or mangled identifiers, never code porter runs."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.security.conftest import assert_one_line_error, porter_cli, run_capped

pytestmark = pytest.mark.slow  # each case runs a full `porter convert` in a child

CANARY = "CANARY"


def _payload(close: str) -> str:
    return f'{close};__import__("pathlib").Path("{CANARY}").write_text("pwned");{close}'


HOSTILE = [
    'x""";__import__("pathlib").Path("CANARY").write_text("pwned");"""',  # docstring breakout
    "y'''\n__import__('pathlib').Path('CANARY').write_text('pwned')\n'''",
    'w\\\\"\\n\\',  # backslashes and an escaped quote
    "\u0455\u0435lf",  # Cyrillic look-alike of "self"
    "__import__('os').system('touch CANARY')",
    "class",
]


def _model(path: Path, input_name: str, eps) -> Path:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype("float32"),
                                     HOSTILE[2] + ".weight")]
    for k, v in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0)):
        inits.append(numpy_helper.from_array(np.full(4, v, "float32") + rng.random(4,
                                             dtype=np.float32) * 0.1, f"{HOSTILE[1]}.{k}"))
    bn = [f"{HOSTILE[1]}.{k}" for k in "sbmv"]
    nodes = [helper.make_node("Conv", [input_name, inits[0].name], ["c"], pads=[1, 1, 1, 1],
                              name=HOSTILE[0]),
             helper.make_node("BatchNormalization", ["c", *bn], ["n"], epsilon=eps,
                              name=HOSTILE[3]),
             helper.make_node("Relu", ["n"], [HOSTILE[4]], name=HOSTILE[5])]
    graph = helper.make_graph(
        nodes, HOSTILE[0], [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                          [1, 3, 8, 8])],
        [helper.make_tensor_value_info(HOSTILE[4], TensorProto.FLOAT, [1, 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


def test_hostile_names_give_inert_code(arena) -> None:
    model_dir, cwd = arena
    path = _model(model_dir / 'm"""x.onnx', HOSTILE[0], 1e-5)
    out = cwd / "out"
    proc = porter_cli("convert", str(path), "--out", str(out), "-q", cwd=cwd, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (cwd / CANARY).exists() and not (model_dir / CANARY).exists()
    src = (out / "model.py").read_text()
    tree = ast.parse(src)
    # the hostile text survives only inside string constants (docstrings), never as code
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name)}
    assert "__import__" not in calls and "exec" not in calls and "eval" not in calls
    assert src.isascii()
    # loading and running the file (what `load_output` / a zoo load does) writes nothing either
    run = run_capped(["-c", "import runpy, torch, sys; ns = runpy.run_path(sys.argv[1]); "
                      "m = ns['Model']().eval(); print(tuple(m(torch.zeros(1, 3, 8, 8)).shape))",
                      str(out / "model.py")], cwd, timeout=120, cap=None)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(1, 4, 8, 8)" in run.stdout
    assert not (cwd / CANARY).exists()


def test_string_epsilon_is_refused_not_pasted(arena) -> None:
    model_dir, cwd = arena
    path = _model(model_dir / "m.onnx", "x", _payload(")"))
    for mode in ("none", "cpu"):
        proc = porter_cli("convert", str(path), "--verify", mode, "--out", str(cwd / mode),
                          "-q", cwd=cwd, timeout=300)
        assert not (cwd / CANARY).exists() and not (model_dir / CANARY).exists()
        assert_one_line_error(proc, "epsilon")


def test_module_names_that_are_not_identifiers_are_reached_by_getattr() -> None:
    """torch accepts any submodule name without a dot (a TF loop body's holder came out as
    ``and``); model.py reaches such names with getattr/setattr and quoted literals, the state
    dict keys unchanged, never as code."""
    import torch
    from torch import nn

    from porter.converters.codegen import _access, _assign

    assert _access("a.b") == "self.a.b"
    assert _access("while_.and.weight") == "getattr(self.while_, 'and').weight"
    hostile = "x');import os;('"
    assert _assign(f"a.{hostile}", "nn.Module()") == \
        f"setattr(self.a, {hostile!r}, nn.Module())"
    root = nn.Module()
    ns = {"self": root, "nn": nn, "torch": torch}
    exec(_assign("a", "nn.Module()"), ns)  # noqa: S102 - our own generated line
    exec(_assign("a.and", "nn.Linear(2, 2)"), ns)  # noqa: S102
    exec(_assign(f"a.{hostile}", "nn.Identity()"), ns)  # noqa: S102
    assert set(root.state_dict()) == {"a.and.weight", "a.and.bias"}
    assert eval(_access("a.and.weight"), ns) is root.get_submodule("a.and").weight  # noqa: S307
    assert "os" not in ns
