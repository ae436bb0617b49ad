"""onnxruntime's own warnings stay off stderr unless PORTER_VERBOSE (``porter --verbose``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]

# onnxruntime warns once per unused initializer when it builds the session
_RUN = """
import sys
import numpy as np, onnx
from porter.verification.runtimes.onnxruntime import OrtRunner
out = OrtRunner(onnx.load(sys.argv[1]))({"x": np.array([[-1, 2, -3, 4]], np.float32)})["y"]
print(out.tolist())
"""


def _model(path: Path, unused: int) -> Path:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [numpy_helper.from_array(np.ones(3, np.float32), f"unused_{i}") for i in range(unused)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
              path)
    return path


def _run(model: Path, verbose: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PORTER_VERBOSE"}
    env["PYTHONPATH"] = str(ROOT)
    if verbose:
        env["PORTER_VERBOSE"] = "1"
    return subprocess.run([sys.executable, "-c", _RUN, str(model)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)


def test_onnxruntime_warnings_are_quiet_unless_verbose(tmp_path: Path) -> None:
    model = _model(tmp_path / "unused.onnx", unused=5)
    quiet, loud = _run(model, verbose=False), _run(model, verbose=True)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    # the session still computes the same result either way
    assert quiet.stdout.strip() == loud.stdout.strip() == "[[0.0, 2.0, 0.0, 4.0]]"
    warned = [line for line in loud.stderr.splitlines() if "Removing initializer" in line]
    assert len(warned) == 5, loud.stderr
    assert "onnxruntime" not in quiet.stderr and quiet.stderr.strip() == "", quiet.stderr


def test_cli_verbose_flag_sets_porter_verbose(tmp_path: Path, monkeypatch) -> None:
    from porter.cli.main import main
    from porter.verification.runtimes.onnxruntime import ort_verbose, session_options

    monkeypatch.setenv("PORTER_VERBOSE", "0")  # restored after the test, as main() sets it
    assert not ort_verbose() and session_options().log_severity_level == 3
    model = _model(tmp_path / "m.onnx", unused=0)
    assert main(["inspect", str(model)]) == 0 and not ort_verbose()
    assert main(["--verbose", "inspect", str(model)]) == 0
    assert ort_verbose() and session_options().log_severity_level == 2
