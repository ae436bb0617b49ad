"""TensorFlow <-> torch layout transforms, as named functions (their names go into reports).

TF stores conv kernels HWIO ([kh, kw, in, out]), depthwise kernels [kh, kw, in, multiplier],
Dense kernels [in, out], and runs NHWC; torch wants OIHW, [in*mult, 1, kh, kw], [out, in], NCHW.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from porter.mapping.layouts import transpose_2d

__all__ = ["hwio_to_oihw", "oihw_to_hwio", "depthwise_to_oihw", "dense_to_linear",
           "nhwc_to_nchw", "nchw_to_nhwc", "batchnorm_epsilons", "BATCHNORM_OPS"]


def hwio_to_oihw(a: np.ndarray) -> np.ndarray:
    """Conv2D kernel [kh, kw, in, out] -> torch Conv2d weight [out, in, kh, kw]."""
    if a.ndim != 4:
        raise ValueError(f"hwio_to_oihw expects a 4-D kernel, got shape {a.shape}")
    return np.ascontiguousarray(a.transpose(3, 2, 0, 1))


def oihw_to_hwio(a: np.ndarray) -> np.ndarray:
    """torch Conv2d weight [out, in, kh, kw] -> TF Conv2D kernel [kh, kw, in, out]."""
    if a.ndim != 4:
        raise ValueError(f"oihw_to_hwio expects a 4-D weight, got shape {a.shape}")
    return np.ascontiguousarray(a.transpose(2, 3, 1, 0))


def depthwise_to_oihw(a: np.ndarray) -> np.ndarray:
    """DepthwiseConv2dNative kernel [kh, kw, in, mult] -> torch weight [in*mult, 1, kh, kw].

    TF's output channel ``c * mult + m`` reads input channel ``c``, which is exactly torch's
    grouped conv with ``groups=in`` when the (in, mult) axes are flattened in that order.
    """
    if a.ndim != 4:
        raise ValueError(f"depthwise_to_oihw expects a 4-D kernel, got shape {a.shape}")
    kh, kw, cin, mult = a.shape
    return np.ascontiguousarray(a.reshape(kh, kw, cin * mult).transpose(2, 0, 1)[:, None])


def dense_to_linear(a: np.ndarray) -> np.ndarray:
    """Dense / MatMul kernel [in, out] -> torch Linear weight [out, in]."""
    return transpose_2d(a)


def nhwc_to_nchw(a: np.ndarray) -> np.ndarray:
    """Activations NHWC -> NCHW (a 4-D array; other ranks pass through unchanged)."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a


def nchw_to_nhwc(a: np.ndarray) -> np.ndarray:
    """Activations NCHW -> NHWC (a 4-D array; other ranks pass through unchanged)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)) if a.ndim == 4 else a


BATCHNORM_OPS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


def batchnorm_epsilons(graph: Any) -> dict[str, float]:
    """Epsilon of every FusedBatchNorm op of a TF op graph (``Source.graph``), by node name.

    TF stores epsilon as a float32 attribute; the value is returned as that float32 widened
    to a Python float, so torch's BatchNorm2d(eps=...) computes with the very same number.
    """
    return {name: float(np.float32(data["attrs"].get("epsilon", 1e-4)))
            for name, data in graph.nodes(data=True) if data["op_type"] in BATCHNORM_OPS}
