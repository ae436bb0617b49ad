"""Per-output agreement metrics between a reference array and a candidate array."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["compare_arrays"]


def compare_arrays(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float | list[int]]:
    """max |Δ|, mean |Δ|, cosine similarity, max relative error and PSNR of two arrays.

    Computed in float64 so the metric itself adds no error. PSNR uses the reference's
    peak-to-peak range, or its largest magnitude where that is bigger (a one-element or constant
    output has no range), as the signal peak; identical arrays give ``inf``. ``ref_peak`` is the
    reference's largest finite magnitude.
    """
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs candidate {cand.shape}")
    if ref.size == 0:
        return {"shape": list(ref.shape), "max_abs": 0.0, "mean_abs": 0.0, "cosine": 1.0,
                "max_rel": 0.0, "psnr": math.inf, "nonfinite": 0, "ref_peak": 0.0}
    diff = np.abs(ref - cand)
    finite = np.isfinite(diff)
    nonfinite = int((~finite).sum() - (~np.isfinite(ref) & (ref == cand)).sum())
    diff = np.where(np.isfinite(ref) & np.isfinite(cand), diff, np.where(ref == cand, 0.0, np.inf))
    r, c = ref.ravel(), cand.ravel()
    fin = np.isfinite(r) & np.isfinite(c)
    nr, nc = np.linalg.norm(r[fin]), np.linalg.norm(c[fin])
    cosine = 1.0 if nr == 0 and nc == 0 else float(np.dot(r[fin], c[fin]) / (nr * nc or 1.0))
    rel = diff / np.maximum(np.abs(ref), 1e-6)
    mse = float(np.mean(diff**2))
    finite_ref = ref[np.isfinite(ref)]
    ref_peak = float(np.abs(finite_ref).max()) if finite_ref.size else 0.0
    peak = max(float(np.ptp(finite_ref)) if finite_ref.size else 0.0, ref_peak, 1e-12)
    if mse == 0:
        psnr = math.inf
    elif not math.isfinite(mse):
        psnr = -math.inf
    else:
        psnr = 10.0 * math.log10(peak**2 / mse)
    return {
        "shape": list(ref.shape),
        "max_abs": float(diff.max()),
        "mean_abs": float(diff.mean()),
        "cosine": cosine,
        "max_rel": float(rel.max()),
        "psnr": psnr,
        "nonfinite": max(nonfinite, 0),
        "ref_peak": ref_peak,
    }
