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


def test_missing_file(error_line, capsys, tmp_path):
    assert main(["convert", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in error_line()


def test_unknown_format(error_line, capsys, tmp_path):
    f = tmp_path / "model.xyz"
    f.write_text("???")
    assert main(["inspect", str(f)]) == 2
    assert "unknown format" in error_line()


def test_truncated_onnx(error_line, capsys, tmp_path, tiny_onnx):
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(tiny_onnx.read_bytes()[:40])
    assert main(["convert", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "truncated or corrupt" in error_line()
    assert not (tmp_path / "o").exists()


def test_source_that_does_not_fit_the_graph(error_line, capsys, tmp_path, tiny_onnx):
    assert main(["convert", str(tiny_onnx), "--graph", "modnet", "--out",
                 str(tmp_path / "o")]) == 2
    assert "structure" in error_line()
    assert not (tmp_path / "o").exists()


def test_unknown_graph_lists_known_ones(error_line, capsys, tiny_onnx):
    assert main(["convert", str(tiny_onnx), "--graph", "nosuch"]) == 2
    line = error_line()
    assert "known:" in line and "modnet" in line


def test_inspect_json(capsys, tiny_onnx):
    assert main(["inspect", str(tiny_onnx), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "onnx" and info["opset"] == 13
    assert info["tensors"] == [{"name": "w", "shape": [2, 3, 1, 1], "dtype": "float32",
                                "kind": "initializer"}]
    assert info["ops"] == {"Conv": 1}


def test_convert_generic_json_and_zoo(error_line, capsys, tmp_path, tiny_onnx):
    zoo = tmp_path / "zoo"
    assert main(["convert", str(tiny_onnx), "--out", str(tmp_path / "o"), "--json",
                 "--publish", "--zoo", str(zoo), "--name", "tiny"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["parity"]["passed"] and manifest["name"] == "tiny"
    assert main(["zoo", "--zoo", str(zoo), "list"]) == 0
    assert "tiny" in capsys.readouterr().out
    assert main(["zoo", "--zoo", str(zoo), "verify", "tiny"]) == 0
    weights = zoo / "blobs" / "sha256" / manifest["weights"]["sha256"]  # the stored blob
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["zoo", "--zoo", str(zoo), "verify", "tiny"]) == 1
    assert "corrupt in the zoo" in error_line()


def test_help_teaches_and_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "porter", "convert", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0
    for word in ("--verify", "--graph", "--publish", "examples:", "torch-source"):
        assert word in proc.stdout


def test_unexpected_errors_are_one_line(error_line, capsys, monkeypatch, tiny_onnx):
    import porter.pipeline

    def boom(*a, **k):
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(porter.pipeline, "convert", boom)
    assert main(["convert", str(tiny_onnx)]) == 3
    line = error_line()
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


def _save(tmp_path, name, nodes, x_shape, inits=(), x_type=TensorProto.FLOAT):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", x_type, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], list(inits))
    path = tmp_path / name
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=9), path)
    return path


def test_generated_source_never_shadows_the_helpers_it_calls(tmp_path, capsys):
    """A node scoped /transpose/ must not name a local `transpose` before transpose() runs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from porter.zoo.load import load_output

    path = _save(tmp_path, "shadow.onnx",
                 [helper.make_node("Relu", ["x"], ["r"], name="/transpose/Relu"),
                  helper.make_node("Transpose", ["r"], ["y"], name="/head/T", perm=[0, 2, 1])],
                 [1, 3, 4])
    out = tmp_path / "out"
    assert main(["convert", str(path), "--graph", "generic", "--out", str(out), "-q"]) == 0
    x = np.random.default_rng(0).standard_normal((1, 3, 4)).astype(np.float32)
    got = load_output(out, trust_code=True)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, ort.InferenceSession(str(path)).run(None, {"x": x})[0])


def test_broken_generated_source_is_never_written(error_line, tmp_path, capsys, tiny_onnx, monkeypatch):
    import porter.converters.codegen as codegen

    real = codegen.render_source
    monkeypatch.setattr(codegen, "render_source",
                        lambda *a, **k: real(*a, **k).replace("        return ", "        return 1 + "))
    out = tmp_path / "out"
    assert main(["convert", str(tiny_onnx), "--graph", "generic", "--out", str(out)]) == 2
    assert "generated model.py disagrees with the converted module" in error_line()
    assert not out.exists()


def test_reference_runtime_refusing_the_inputs_is_one_clear_line(error_line, tmp_path, capsys):
    shape = numpy_helper.from_array(__import__("numpy").array([2, 6], "int64"), "s")
    path = _save(tmp_path, "rigid.onnx", [helper.make_node("Reshape", ["x", "s"], ["y"])],
                 [1, "C", 4], [shape])
    assert main(["verify", str(path), "--graph", "generic"]) == 2  # C=64 by default, not 3
    assert "onnxruntime cannot run the model on x=1x64x4" in error_line()
    assert main(["verify", str(path), "--graph", "generic", "--shape", "x=1x3x4"]) == 0


def test_generic_input_image_and_weak_check_note(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    w = numpy_helper.from_array(np.full((1, 3, 1, 1), 1e-7, np.float32), "w")
    path = _save(tmp_path, "faint.onnx", [helper.make_node("Conv", ["x", "w"], ["y"])],
                 [1, 3, "H", "W"], [w])
    assert main(["verify", str(path), "--graph", "generic", "--json"]) == 0
    assert "weak check" in json.loads(capsys.readouterr().out)["note"]
    img = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 30, 3), np.uint8)).save(img)
    out = tmp_path / "o"
    assert main(["convert", str(path), "--graph", "generic", "--input", str(img),
                 "--out", str(out), "--json"]) == 0
    cases = json.loads((out / "manifest.json").read_text())["parity"]["cases"]
    assert cases[-1]["name"] == "image:img.png" and cases[-1]["shapes"]["x"] == [1, 3, 64, 96]


def test_zoo_build_catalog_may_follow_only(error_line, tmp_path):
    """`--only NAME... catalog.toml`: the last word is the catalog, not an entry name (an
    unknown NAME proves it: the catalog was read and refused the name, nothing was built)."""
    from pathlib import Path

    catalog = Path(__file__).resolve().parents[2] / "model_zoo" / "catalog.toml"
    zoo = str(tmp_path / "zoo")
    assert main(["zoo", "build", "--zoo", zoo, "--only", "no_such_entry", str(catalog)]) == 2
    assert "--only names entries the catalog does not have: no_such_entry" in error_line()
    assert main(["zoo", "build", "--zoo", zoo, "--only", str(catalog)]) == 2
    assert f"--only needs at least one entry NAME before {catalog}" in error_line()
    assert main(["zoo", "build", "--zoo", zoo, "--only", "a", "b"]) == 2
    assert "zoo build needs CATALOG" in error_line()
    assert not (tmp_path / "zoo").exists()
