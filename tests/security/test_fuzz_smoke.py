"""A bounded run of scripts/fuzz_importers.py: mutated inputs of every format porter reads give
only ``ok`` or a porter error, never a foreign exception, a crash, a hang or a memory blow-up."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.security.conftest import ROOT, run_capped


def _run(tmp_path: Path, *args: str, timeout: float) -> dict:
    out = tmp_path / "fuzz.json"
    proc = run_capped([str(ROOT / "scripts" / "fuzz_importers.py"), *args, "--json", str(out),
                       "--keep", str(tmp_path / "bad")], tmp_path, timeout=timeout, cap=None)
    assert out.is_file(), proc.stderr[-3000:]
    results = json.loads(out.read_text())
    bad = {fmt: {k: r["counts"].get(k, 0) for k in ("foreign", "memory", "crash", "hang")}
           for fmt, r in results.items()}
    assert all(not any(v.values()) for v in bad.values()), (bad, [
        r.get("examples") for r in results.values() if r.get("examples")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results


def test_fuzz_onnx_and_pickles_quick(tmp_path: Path) -> None:
    results = _run(tmp_path, "--formats", "onnx,paddle-params", "-n", "40", "--seed", "1",
                   timeout=600)
    assert sum(results["onnx"]["counts"].values()) == 40
    assert results["onnx"]["counts"].get("ok", 0) > 0  # the mutations still reach deep code


@pytest.mark.slow
def test_fuzz_every_format_100(tmp_path: Path) -> None:
    """100 inputs per registered format (TF and Paddle seeds built by the fixture scripts)."""
    results = _run(tmp_path, "-n", "100", "--seed", "2", timeout=3000)
    for fmt, r in results.items():
        assert r.get("seeds", 0) > 0, f"{fmt}: no seed ({r.get('note')})"
        assert sum(r["counts"].values()) == 100
