"""Layout transforms between frameworks, as named functions (their names go into reports)."""

from __future__ import annotations

import numpy as np

__all__ = ["transpose_2d", "identity"]


def identity(a: np.ndarray) -> np.ndarray:
    """No change (named so reports can say so explicitly)."""
    return a


def transpose_2d(a: np.ndarray) -> np.ndarray:
    """[in, out] <-> [out, in]: Paddle Linear, TF Dense and ONNX MatMul weights vs torch Linear."""
    if a.ndim != 2:
        raise ValueError(f"transpose_2d expects a 2-D array, got shape {a.shape}")
    return np.ascontiguousarray(a.T)
