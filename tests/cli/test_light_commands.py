"""Commands that need no torch never import it (issue 14 item 5): each runs in a fresh process
that reports which heavy frameworks it ended up holding."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "tensorflow", "paddle", "transformers", "onnxruntime")

_CHILD = r"""
import json, sys
from porter.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # argparse's --help
    code = exc.code
held = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
print(json.dumps({"code": code, "held": held, "numpy": "numpy" in sys.modules}))
"""


def _run(args: list[str]) -> tuple[dict, str]:
    """The command's exit code and the heavy modules it held, and what it printed."""
    proc = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{_CHILD}", *args],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    *printed, last = proc.stdout.strip().splitlines()
    return json.loads(last), "\n".join(printed)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A one-Conv ONNX file and a zoo holding its conversion."""
    from porter.pipeline import convert

    tmp = tmp_path_factory.mktemp("light")
    w = numpy_helper.from_array(np.full((2, 3, 1, 1), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])], [w])
    path = tmp / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    zoo = tmp / "zoo"
    convert(path, verify="none", out=tmp / "out", publish=True, zoo=zoo, name="tiny")
    return path, zoo


def test_help_imports_no_framework() -> None:
    got, printed = _run(["--help"])
    # not even numpy: `porter.Source` loads on first use
    assert got == {"code": 0, "held": [], "numpy": False} and "porter convert" in printed


def test_inspect_onnx_imports_no_torch(tiny: tuple[Path, Path]) -> None:
    got, printed = _run(["inspect", str(tiny[0])])
    assert (got["code"], got["held"]) == (0, []) and "Conv" in printed


def test_zoo_list_imports_no_torch(tiny: tuple[Path, Path]) -> None:
    got, printed = _run(["zoo", "--zoo", str(tiny[1]), "list"])
    assert (got["code"], got["held"]) == (0, []) and "tiny" in printed
