"""TF graphs cannot run I/O or stateful ops (issue 10, case 1).

Each frozen graph's output depends, through a control dependency or data, on an op that writes
a file (``WriteFile``, ``PrintV2`` to a file, ``DebugIdentity`` dumping while tf2onnx folds
constants) or reads / lists outside the folder (``ReadFile``, ``MatchingFiles``). porter must
refuse each before TensorFlow or tf2onnx runs anything, naming the node, in every verify mode.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.security.conftest import assert_one_line_error, porter_cli, run_capped

pytestmark = pytest.mark.slow  # TensorFlow builds the graphs in a child

_BUILD = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
v1 = tf.compat.v1
v1.disable_eager_execution()
out, canary, secret, dump = sys.argv[1:5]

def save(name, make):
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 4], name="x")
        dep = make(x)
        with tf.control_dependencies([dep]):
            y = tf.identity(x * 2.0, name="y")
    with open(os.path.join(out, name + ".pb"), "wb") as fh:
        fh.write(g.as_graph_def().SerializeToString())

save("write_file", lambda x: tf.io.write_file(canary, "pwned"))
save("print_v2", lambda x: tf.print("pwned", output_stream="file://" + canary))
save("read_file", lambda x: tf.strings.length(tf.io.read_file(secret)))
save("matching_files", lambda x: tf.io.matching_files(os.path.dirname(secret) + "/*"))
save("debug_identity", lambda x: tf.raw_ops.DebugIdentity(
    input=tf.constant([1.0]), debug_urls=["file://" + dump]))
'''

CASES = [("write_file", "WriteFile"), ("print_v2", "PrintV2"), ("read_file", "ReadFile"),
         ("matching_files", "MatchingFiles"), ("debug_identity", "DebugIdentity")]


@pytest.fixture(scope="module")
def hostile_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tfops")
    model, cwd = root / "model", root / "cwd"
    model.mkdir()
    cwd.mkdir()
    (cwd / "secret").write_text("top secret")
    proc = run_capped(["-c", _BUILD, str(model), str(cwd / "CANARY"), str(cwd / "secret"),
                       str(cwd / "dump")], cwd, timeout=300, cap=None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return model, cwd


@pytest.mark.parametrize("name,op", CASES)
@pytest.mark.parametrize("verify", ["cpu", "none"])
def test_io_ops_are_refused_before_anything_runs(hostile_graphs, name: str, op: str,
                                                 verify: str) -> None:
    model, cwd = hostile_graphs
    out = cwd / f"out-{name}-{verify}"
    proc = porter_cli("convert", str(model / f"{name}.pb"), "--verify", verify, "--out",
                      str(out), "-q", cwd=cwd, timeout=300, cap=None)
    line = assert_one_line_error(proc, op)
    assert "allow-list" in line and "node" in line
    assert not (cwd / "CANARY").exists() and not (cwd / "dump").exists()
    assert not out.exists()
    assert "top secret" not in proc.stdout + proc.stderr


def test_the_tf_reference_refuses_too(hostile_graphs) -> None:
    """The child-side check: a caller that hands the graph straight to the TF reference."""
    model, cwd = hostile_graphs
    code = ("import sys; from porter.verification.runtimes.child import ChildRuntime\n"
            "from porter.errors import PorterError\n"
            "try:\n"
            "    ChildRuntime('porter.verification.runtimes.tf1:frozen', {'graph': sys.argv[1],\n"
            "                 'inputs': {'x': 'x:0'}, 'outputs': {'y': 'y:0'}})\n"
            "except PorterError as exc:\n"
            "    print(exc)\n")
    proc = run_capped(["-c", code, str(model / "write_file.pb")], cwd, timeout=300, cap=None)
    assert "WriteFile" in proc.stdout and "allow-list" in proc.stdout, proc.stderr[-2000:]
    assert not (cwd / "CANARY").exists()
    assert sys.executable  # the child ran in this interpreter's environment
