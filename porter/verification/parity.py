"""Parity runs: the same inputs through the source runtime and the ported module, compared.

A *runner* is any callable ``dict[str, ndarray] -> dict[str, ndarray]``. Inputs and outputs are
in the torch module's convention (NCHW, the module's names); a runner for a framework with other
conventions (TF's NHWC, say) adapts inside itself, so parity compares like with like.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porter.verification.metrics import compare_arrays

__all__ = ["Case", "Tolerance", "ParityReport", "run_parity", "random_cases", "Runner"]

Runner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass
class Case:
    """One set of inputs, with the seed that made it (None for a user-supplied input)."""

    name: str
    inputs: dict[str, np.ndarray]
    seed: int | None = None

    def shapes(self) -> dict[str, list[int]]:
        return {k: list(v.shape) for k, v in self.inputs.items()}


@dataclass(frozen=True)
class Tolerance:
    """Bounds an output must meet: max |Δ| always, mean |Δ| where set.

    ``rel_to_peak`` widens the max |Δ| bound by that fraction of the reference's largest
    magnitude: float32 spacing grows with magnitude, so an output in pixels (YOLO boxes up to
    640) cannot be held to the absolute bound of one in [0, 1] (one ulp at 640 is 6e-5).
    """

    max_abs: float = 1e-4
    mean_abs: float | None = None
    rel_to_peak: float = 0.0

    def bound(self, metrics: Mapping[str, Any]) -> float:
        """The max |Δ| allowed for an output with these metrics."""
        return self.max_abs + self.rel_to_peak * float(metrics.get("ref_peak", 0.0))

    def check(self, metrics: Mapping[str, Any]) -> bool:
        if not metrics["max_abs"] <= self.bound(metrics):  # NaN fails too
            return False
        return self.mean_abs is None or metrics["mean_abs"] <= self.mean_abs

    def describe(self) -> str:
        """``1e-4`` or ``1e-4 + 1e-6 x max|ref|``."""
        text = f"{self.max_abs:g}"
        return text + (f" + {self.rel_to_peak:g} x max|ref|" if self.rel_to_peak else "")


def _finite(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


@dataclass
class ParityReport:
    """Metrics per case and output, the tolerance, what ran on each side, and the verdict."""

    reference: str
    candidate: str
    device: str
    tolerance: Tolerance
    cases: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(
            o["passed"] for c in self.cases for o in c["outputs"].values())

    def worst(self, metric: str = "max_abs") -> float:
        vals = [o[metric] for c in self.cases for o in c["outputs"].values()]
        if metric in ("cosine", "psnr"):
            return min(vals) if vals else math.nan
        return max(vals) if vals else math.nan

    def to_dict(self) -> dict[str, Any]:
        cases = []
        for c in self.cases:
            outs = {k: {m: (_finite(v) if isinstance(v, float) else v) for m, v in o.items()}
                    for k, o in c["outputs"].items()}
            cases.append({**c, "outputs": outs})
        return {
            "reference": self.reference, "candidate": self.candidate, "device": self.device,
            "tolerance": {"max_abs": self.tolerance.max_abs, "mean_abs": self.tolerance.mean_abs,
                          "rel_to_peak": self.tolerance.rel_to_peak},
            "passed": self.passed, "worst_max_abs": _finite(self.worst("max_abs")),
            "cases": cases, "versions": self.versions, "note": self.note,
        }

    def lines(self) -> list[str]:
        """Human-readable lines, one per case and output."""
        out = []
        for c in self.cases:
            for name, m in c["outputs"].items():
                flag = "ok " if m["passed"] else "BAD"
                out.append(
                    f"{flag} {c['name']:<28} {name:<18} max|Δ| {m['max_abs']:.3e}  "
                    f"mean|Δ| {m['mean_abs']:.3e}  cos {m['cosine']:.8f}  "
                    f"PSNR {m['psnr']:.1f} dB")
        return out


def run_parity(reference: Runner, candidate: Runner, cases: Sequence[Case], *,
               tolerance: Tolerance = Tolerance(), reference_name: str, candidate_name: str,
               device: str = "cpu", outputs: Sequence[str] | None = None,
               versions: Mapping[str, str] | None = None,
               progress: Callable[[str], None] | None = None) -> ParityReport:
    """Run every case through both sides and compare the outputs they share (or ``outputs``).

    ``progress`` gets a line after each case with an estimate of the time left (by input size).
    """
    import time

    report = ParityReport(reference_name, candidate_name, device, tolerance,
                          versions=dict(versions or runtime_versions()))
    sizes = [sum(int(np.size(v)) for v in c.inputs.values()) or 1 for c in cases]
    start = time.monotonic()
    for i, case in enumerate(cases):
        ref = reference(case.inputs)
        cand = candidate(case.inputs)
        names = list(outputs) if outputs else [k for k in ref if k in cand]
        if not names:
            raise ValueError(f"case {case.name}: runners share no output names "
                             f"(reference {list(ref)}, candidate {list(cand)})")
        metrics = {}
        for name in names:
            m = compare_arrays(np.asarray(ref[name]), np.asarray(cand[name]))
            m["passed"] = tolerance.check(m)
            metrics[name] = m
        report.cases.append({"name": case.name, "seed": case.seed, "shapes": case.shapes(),
                             "outputs": metrics})
        if progress is not None and i + 1 < len(cases):
            spent = time.monotonic() - start
            left = spent / sum(sizes[:i + 1]) * sum(sizes[i + 1:])
            progress(f"         case {i + 1}/{len(cases)} {case.name} done in {spent:.0f}s "
                     f"so far, about {left:.0f}s left")
    return report


def random_cases(input_name: str, shapes: Sequence[Sequence[int]], *, seed: int = 0,
                 low: float = -1.0, high: float = 1.0, dtype: str = "float32") -> list[Case]:
    """Uniform random inputs, one case per shape, each with its own recorded seed."""
    cases = []
    for i, shape in enumerate(shapes):
        s = seed + i
        x = np.random.default_rng(s).uniform(low, high, size=tuple(shape)).astype(dtype)
        cases.append(Case("x".join(str(d) for d in shape), {input_name: x}, s))
    return cases


def runtime_versions() -> dict[str, str]:
    """Versions of whatever frameworks are already imported (nothing new is imported)."""
    import sys

    out = {"python": platform.python_version()}
    for mod in ("numpy", "torch", "onnx", "onnxruntime", "tensorflow", "paddle", "porter"):
        m = sys.modules.get(mod)
        if m is not None and hasattr(m, "__version__"):
            out[mod] = str(m.__version__)
    return out
