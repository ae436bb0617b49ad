"""Shared fixtures. Frameworks (TensorFlow, Paddle) only ever run in child processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent / "shared" / "models"


@pytest.fixture(scope="session")
def tf1_fixtures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """TF1 checkpoints / MetaGraph / frozen graph built by TensorFlow in one child process,
    with what TensorFlow itself reads from them and from every real checkpoint under
    ../shared/models (see scripts/build_tf1_fixtures.py)."""
    out = tmp_path_factory.mktemp("tf1")
    real = [str(p)[:-len(".index")] for p in sorted(SHARED_MODELS.glob("*/*.index"))]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tf1_fixtures.py"),
                           str(out), *real], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "expected.pkl", "rb") as fh:
        return out, pickle.load(fh)
