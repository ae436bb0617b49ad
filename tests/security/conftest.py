"""Helpers for the hostile-file corpus: run porter in a child under a memory cap and a timeout.

Each case builds its hostile file on the fly, runs porter on it in a fresh interpreter (so a
crash, hang or blow-up fails the test instead of taking pytest down) and checks that the outcome
is one ``porter: error: ...`` line, and that nothing outside the model folder was touched.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMORY_CAP = 2 << 30  # RLIMIT_AS over the interpreter's own baseline, see scripts/fuzz_importers.py


def _baseline_vm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_capped(code_args: list[str], cwd: Path, timeout: float = 120,
               cap: int | None = MEMORY_CAP) -> subprocess.CompletedProcess:
    """``python ARGS`` in ``cwd`` with RLIMIT_AS (cap above this process's size) and a timeout."""
    limit = _baseline_vm() + cap if cap else None

    def limits() -> None:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(cwd),
           "TF_CPP_MIN_LOG_LEVEL": "3",
           **{k: v for k, v in os.environ.items() if k.startswith("PORTER_")}}
    try:
        return subprocess.run([sys.executable, *code_args], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, preexec_fn=limits, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"porter ran past {timeout} s on a hostile file (a hang)")


def porter_cli(*args: str, cwd: Path, timeout: float = 120,
               cap: int | None = MEMORY_CAP) -> subprocess.CompletedProcess:
    """Run ``python -m porter ARGS`` capped; see :func:`run_capped`."""
    return run_capped(["-m", "porter", *args], cwd, timeout, cap)


def open_all(path: Path, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``porter.open(path)`` plus reading every tensor, in a capped child (the fuzzer's worker)."""
    return run_capped([str(ROOT / "scripts" / "fuzz_importers.py"), "--one", str(path)], cwd,
                      timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, match: str = "") -> str:
    """The run failed with exit 2 and one ``porter: error:`` line (no traceback) containing
    ``match``; returns that line."""
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("porter: error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "internal error" not in lines[0], lines[0]
    assert match.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """(model folder, working directory): canaries and secrets live in the working directory,
    outside the model folder; nothing porter does may write or read them."""
    model, cwd = tmp_path / "model", tmp_path / "cwd"
    model.mkdir()
    cwd.mkdir()
    return model, cwd
