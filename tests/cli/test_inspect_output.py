"""Issue 11, "Why" 10: `porter inspect OUT/` reads porter's own outputs and zoo entries, and long
op histograms wrap instead of filling one line."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from porter.cli.main import main


def _model(tmp_path):
    w = numpy_helper.from_array(np.ones((3, 3, 1, 1), np.float32), "w")
    nodes, prev = [], "x"
    ops = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Softsign", "Softplus", "Elu",
           "Selu", "HardSigmoid", "Identity", "Floor", "Ceil", "Round", "Sign", "Erf"]
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"]))
        prev = f"t{i}"
    nodes.append(helper.make_node("Conv", [prev, "w"], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])], [w])
    path = tmp_path / "many.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    return path


def test_op_histogram_wraps(capsys, tmp_path):
    assert main(["inspect", str(_model(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    ops = [i for i, line in enumerate(out) if line.startswith("  ops")]
    assert ops and all(len(line) <= 100 for line in out[ops[0]:ops[0] + 3])
    assert re.search(r"\bErf +1\b", "\n".join(out))


def test_inspect_reads_an_output_and_a_zoo_entry(capsys, tmp_path, monkeypatch):
    src = _model(tmp_path)
    monkeypatch.setenv("PORTER_ZOO", str(tmp_path / "zoo"))
    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))  # where zoo entries are pulled
    assert main(["convert", str(src), "--out", str(tmp_path / "o"), "-q", "--publish"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "o")]) == 0
    text = capsys.readouterr().out
    assert "porter 0.1.0 output: many" in text and "sha256 ok" in text
    assert "generated source, sha256" in text and "model.py" in text
    assert main(["inspect", "zoo:many", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "porter output" and info["weights"]["verified"] is True
    assert info["parity"]["passed"] and "README.md" in info["files"]
    (tmp_path / "o" / "model.safetensors").write_bytes(b"x")
    assert main(["inspect", str(tmp_path / "o")]) == 0
    assert "NOT OK" in capsys.readouterr().out
    digest = info["weights"]["sha256"]
    (tmp_path / "zoo" / "blobs" / "sha256" / digest).write_bytes(b"x")
    for cached in (tmp_path / "cache" / "pulls").glob("many@*/model.safetensors"):
        cached.write_bytes(b"x")  # the pulled copy too: inspect must pull again and refuse
    assert main(["inspect", "zoo:many"]) == 1
    assert "corrupt in the zoo" in capsys.readouterr().err


def test_every_help_has_examples_and_completion_runs_in_bash(capsys, tmp_path):
    import shutil
    import subprocess

    import pytest

    from porter.cli.main import COMMANDS

    for argv in ([], *([c] for c in COMMANDS), ["zoo", "list"], ["zoo", "verify"], ["zoo", "gc"],
                 ["zoo", "build"]):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        assert "examples:" in capsys.readouterr().out, argv
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert shutil.which("bash")
    probe = script + ('COMP_WORDS=(porter zoo li); COMP_CWORD=2; _porter; echo "${COMPREPLY[@]}";'
                      'COMP_WORDS=(porter convert x --fo); COMP_CWORD=3; _porter; '
                      'echo "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["list", "--force"]
