"""onnxruntime's intra-op pool follows OMP_NUM_THREADS, as torch's does (a Ray task granted
one CPU has it set to 1; two such tasks on two cores must not each spin a two-thread pool)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from porter.verification.runtimes.onnxruntime import omp_threads

ROOT = Path(__file__).resolve().parents[2]

# how many threads building one session starts in a fresh process
_COUNT = """
import os
from onnx import TensorProto, helper
from porter.verification.runtimes.onnxruntime import OrtRunner
g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
before = len(os.listdir("/proc/self/task"))
runner = OrtRunner(model)
print(len(os.listdir("/proc/self/task")) - before)
"""


def _threads_started(omp: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT)
    if omp is not None:
        env["OMP_NUM_THREADS"] = omp
    out = subprocess.run([sys.executable, "-c", _COUNT], env=env, capture_output=True,
                         text=True, check=True, timeout=120)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_session_pool_size_follows_omp_num_threads():
    one, three = _threads_started("1"), _threads_started("3")
    assert three - one == 2  # intra-op pools of 1 and 3: 0 and 2 worker threads
    # a value that is not a count leaves onnxruntime's own default (one per physical core)
    assert _threads_started("many") == _threads_started(None)


@pytest.mark.parametrize(("value", "expected"), [
    ("1", 1), ("4", 4), ("0", None), ("-2", None), ("", None), ("two", None), (None, None)])
def test_omp_threads_reads_a_positive_count_only(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", value)
    assert omp_threads() == expected
