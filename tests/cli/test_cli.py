"""The CLI: help that teaches, one-line errors with non-zero exits, inspect and zoo commands."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from porter.cli.main import main


@pytest.fixture()
def tiny_onnx(tmp_path):
    import numpy as np

    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                      ir_version=8), path)
    return path


def _error(capsys) -> str:
    """The one error line: last on stderr, after any progress lines, and no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("porter: error: ")]
    assert len(errors) == 1 and err[-1] == errors[0], err
    assert not any("Traceback" in line for line in err)
    return errors[0]


def test_missing_file(capsys, tmp_path):
    assert main(["convert", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in _error(capsys)


def test_unknown_format(capsys, tmp_path):
    f = tmp_path / "model.xyz"
    f.write_text("???")
    assert main(["inspect", str(f)]) == 2
    assert "unknown format" in _error(capsys)


def test_truncated_onnx(capsys, tmp_path, tiny_onnx):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(tiny_onnx.read_bytes()[:40])
    assert main(["convert", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "truncated or corrupt" in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_source_that_does_not_fit_the_graph(capsys, tmp_path, tiny_onnx):
    assert main(["convert", str(tiny_onnx), "--graph", "modnet", "--out",
                 str(tmp_path / "o")]) == 2
    assert "structure" in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_unknown_graph_lists_known_ones(capsys, tiny_onnx):
    assert main(["convert", str(tiny_onnx), "--graph", "nosuch"]) == 2
    line = _error(capsys)
    assert "known:" in line and "modnet" in line


def test_inspect_json(capsys, tiny_onnx):
    assert main(["inspect", str(tiny_onnx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "onnx" and info["opset"] == 13
    assert info["tensors"] == [{"name": "w", "shape": [2, 3, 1, 1], "dtype": "float32",
                                "kind": "initializer"}]
    assert info["ops"] == {"Conv": 1}


def test_convert_generic_json_and_zoo(capsys, tmp_path, tiny_onnx):
    zoo = tmp_path / "zoo"
    assert main(["convert", str(tiny_onnx), "--out", str(tmp_path / "o"), "--json",
                 "--publish", "--zoo", str(zoo), "--name", "tiny"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["parity"]["passed"] and manifest["name"] == "tiny"
    assert main(["zoo", "--zoo", str(zoo), "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["zoo", "--zoo", str(zoo), "verify", "tiny"]) == 0
    weights = zoo / "tiny" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["zoo", "--zoo", str(zoo), "verify", "tiny"]) == 1
    assert "does not match the manifest" in _error(capsys)


def test_help_teaches_and_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "porter", "convert", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("--verify", "--graph", "--publish", "examples:", "torch-source"):
        assert word in proc.stdout


def test_unexpected_errors_are_one_line(capsys, monkeypatch, tiny_onnx):
    import porter.pipeline

    def boom(*a, **k):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(porter.pipeline, "convert", boom)
    assert main(["convert", str(tiny_onnx)]) == 3
    line = _error(capsys)
    assert "internal error" in line and "kaboom second line" in line


def test_verify_locate_reports_no_divergence_and_tiny_tolerance(capsys, tiny_onnx):
    assert main(["verify", str(tiny_onnx), "--locate"]) == 0
    assert ("no divergence beyond max|Δ| 0.0001 + 1e-06 x max|ref|: 1 node outputs checked"
            in capsys.readouterr().out)
    assert main(["verify", str(tiny_onnx), "--locate", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["diverged"] is False and found["checked"] == 1


def test_console_entry_exit_codes_and_broken_pipe(tmp_path, tiny_onnx):
    """The installed entry point (fast exit) keeps exit codes and tolerates a closed pipe."""
    ok = subprocess.run([sys.executable, "-m", "porter", "inspect", str(tiny_onnx)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "onnx" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "porter", "inspect", str(tmp_path / "no.onnx")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("porter: error:")
    piped = subprocess.run(f'"{sys.executable}" -m porter inspect "{tiny_onnx}" --limit 0 | head -c 1',
                           shell=True, capture_output=True, text=True)
    assert piped.returncode == 0 and "error" not in piped.stderr
