"""Metrics, parity reports and child-process runtimes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from porter.errors import PorterError
from porter.verification.metrics import compare_arrays
from porter.verification.parity import Tolerance, random_cases, run_parity
from porter.verification.runtimes.child import ChildRuntime


def test_metrics_values():
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    cand = ref + np.array([0.0, 0.5, 0.0, -0.25], np.float32)
    m = compare_arrays(ref, cand)
    assert m["max_abs"] == 0.5
    assert m["mean_abs"] == pytest.approx(0.1875)
    assert m["max_rel"] == pytest.approx(0.25)
    mse = (0.25 + 0.0625) / 4
    assert m["psnr"] == pytest.approx(10 * math.log10(16.0 / mse))  # peak: max(range 3, |4|)
    expected_cos = float(np.dot(ref, cand) / (np.linalg.norm(ref) * np.linalg.norm(cand)))
    assert m["cosine"] == pytest.approx(expected_cos)
    same = compare_arrays(ref, ref)
    assert same["max_abs"] == 0.0 and same["psnr"] == math.inf and same["cosine"] == 1.0


def test_metrics_flag_nan_and_shape():
    ref = np.zeros(3, np.float32)
    bad = np.array([0.0, np.nan, 0.0], np.float32)
    assert compare_arrays(ref, bad)["max_abs"] == math.inf
    with pytest.raises(ValueError):
        compare_arrays(ref, np.zeros(4))


def test_metrics_peak_and_psnr_of_a_single_value():
    m = compare_arrays(np.array([[-40.0]]), np.array([[-40.001]]))
    assert m["ref_peak"] == 40.0
    assert m["psnr"] == pytest.approx(10 * math.log10(40.0**2 / 1e-6), rel=1e-6)  # not -95 dB


def test_tolerance_widens_with_the_output_magnitude():
    tol = Tolerance(max_abs=1e-4, rel_to_peak=1e-6)
    pixels = compare_arrays(np.array([640.0, 3.0]), np.array([640.0 + 3e-4, 3.0]))
    unit = compare_arrays(np.array([0.5, 1.0]), np.array([0.5 + 3e-4, 1.0]))
    assert tol.bound(pixels) == pytest.approx(1e-4 + 6.4e-4)
    assert tol.check(pixels) and not tol.check(unit)  # same |Δ|: fine at 640, not at 1
    assert not Tolerance(max_abs=1e-4).check(pixels)
    assert tol.describe() == "0.0001 + 1e-06 x max|ref|"


def test_run_parity_passes_and_fails_on_tolerance():
    cases = random_cases("x", [(2, 3), (4, 5)], seed=7)
    assert cases[0].seed == 7 and cases[1].seed == 8
    exact = run_parity(lambda i: {"y": i["x"] * 2}, lambda i: {"y": i["x"] * 2}, cases,
                       reference_name="ref", candidate_name="cand")
    assert exact.passed and exact.worst() == 0.0
    off = run_parity(lambda i: {"y": i["x"]}, lambda i: {"y": i["x"] + 1e-3}, cases,
                     tolerance=Tolerance(max_abs=1e-4), reference_name="r", candidate_name="c")
    assert not off.passed
    assert off.worst() == pytest.approx(1e-3, rel=1e-3)
    d = off.to_dict()
    assert d["cases"][0]["shapes"] == {"x": [2, 3]} and d["passed"] is False


def test_child_runtime_round_trip(tmp_path, monkeypatch):
    mod = tmp_path / "porter_test_child_mod.py"
    mod.write_text("import numpy as np\n"
                   "def make(p):\n"
                   "    print('chatter on stdout must not break the channel')\n"
                   "    return lambda i: {'y': np.asarray(i['x']) * p['k']}\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with ChildRuntime("porter_test_child_mod:make", {"k": 3.0}) as rt:
        out = rt({"x": np.arange(4.0)})
    assert np.array_equal(out["y"], np.arange(4.0) * 3.0)
    with pytest.raises(PorterError, match="no attribute"):
        ChildRuntime("porter_test_child_mod:missing", {})
