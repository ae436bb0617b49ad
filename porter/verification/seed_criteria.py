"""The seeds' own NPU-vs-CPU acceptance: MAE, cosine similarity and relative error.

Ascend adaptations of the models porter targets judge a reduced-precision run against the fp32
CPU run with three figures and two thresholds (cosine similarity > 0.99, relative error < 1 %).
Relative error here is ``sum|Δ| / sum|ref|`` (the MAE relative to the reference's mean
magnitude), which stays meaningful for alpha mattes that are mostly exactly 0 or 1, where a
per-element ratio is not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["seed_criteria", "COSINE_MIN", "REL_ERR_MAX"]

COSINE_MIN = 0.99
REL_ERR_MAX = 0.01


def seed_criteria(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                  cosine_min: float = COSINE_MIN, rel_err_max: float = REL_ERR_MAX
                  ) -> dict[str, Any]:
    """Per shared output: mae, cosine, rel_err and whether both thresholds hold; ``passed``."""
    outputs = {}
    for name in (n for n in reference if n in candidate):
        r = np.asarray(reference[name], np.float64).ravel()
        c = np.asarray(candidate[name], np.float64).ravel()
        diff = np.abs(r - c)
        denom = float(np.abs(r).sum())
        nr, nc = float(np.linalg.norm(r)), float(np.linalg.norm(c))
        cosine = 1.0 if nr == 0 and nc == 0 else float(np.dot(r, c) / (nr * nc or 1.0))
        rel = float(diff.sum()) / denom if denom else (0.0 if not diff.any() else float("inf"))
        ok = bool(np.isfinite(diff).all() and cosine > cosine_min and rel < rel_err_max)
        outputs[name] = {"mae": float(diff.mean()), "cosine": cosine, "rel_err": rel,
                         "passed": ok}
    return {"thresholds": {"cosine_gt": cosine_min, "rel_err_lt": rel_err_max},
            "outputs": outputs, "passed": bool(outputs) and all(o["passed"]
                                                               for o in outputs.values())}
