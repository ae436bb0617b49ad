"""Trace source tensors through an exporter's folds to the module weights that hold them.

Exporters rewrite weights on the way to ONNX: tf2onnx (and torch.onnx, paddle2onnx) fold a
BatchNorm into the convolution before it, TF weights arrive transposed to torch layouts, and
porter itself folds quantized Consts through ``Dequantize``. Each tracer recomputes the rewrite
from the source tensors and looks for the result among the module's parameters, so the report
can say where every tensor went and by how much the recomputation differs (a numeric check of
the fold, not a claim).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from porter.mapping.layouts_tf import depthwise_to_oihw, hwio_to_oihw

__all__ = ["Fold", "layout_candidates", "layout_permutations", "find_close",
           "trace_batchnorm_folds", "FOLD_RTOL"]

FOLD_RTOL = 1e-5  # float32 folds reassociate products: allow ~100 ulps of the peak


@dataclass
class Fold:
    """``sources`` were combined (``how``) into module tensor ``target``; ``max_abs`` checked."""

    sources: tuple[str, ...]
    target: str
    how: str
    max_abs: float


def layout_permutations(shape: tuple[int, ...]
                        ) -> list[tuple[tuple[int, ...], tuple[int, ...] | None, str | None]]:
    """(shape read as, axis permutation, transform name) for each layout an exporter may have
    written a tensor of ``shape`` in (TF -> torch/ONNX): the layout is
    ``arr.reshape(read_as).transpose(perm)`` in C order (None: as stored)."""
    shape = tuple(shape)
    out: list[tuple[tuple[int, ...], tuple[int, ...] | None, str | None]] = [(shape, None, None)]
    if len(shape) == 2:
        out.append((shape, (1, 0), "transpose_2d"))
    if len(shape) == 4:
        kh, kw, cin, mult = shape
        out.append((shape, (3, 2, 0, 1), "hwio_to_oihw"))  # what hwio_to_oihw copies
        out.append(((kh, kw, cin * mult), (2, 0, 1), "depthwise_to_oihw"))  # [C, 1, kh, kw]
    return out


def layout_candidates(arr: np.ndarray) -> Iterator[tuple[np.ndarray, str | None]]:
    """``arr`` as the layouts an exporter may have written it in (TF -> torch/ONNX), as views
    of ``arr`` (strided; see :func:`layout_permutations`): no copy the size of the weight."""
    for read_as, perm, name in layout_permutations(arr.shape):
        if perm is None:
            yield arr, name
        else:
            view = arr.reshape(read_as).transpose(perm)
            yield (view[:, None] if name == "depthwise_to_oihw" else view), name


def find_close(want: np.ndarray, params: Mapping[str, np.ndarray],
               used: Iterable[str] = ()) -> tuple[str, float] | None:
    """The one module tensor equal to ``want`` within FOLD_RTOL of its peak (shape up to size-1
    axes, as exporters reshape biases); None when none or several fit."""
    used = set(used)
    peak = float(np.abs(want).max()) if want.size else 0.0
    bound = FOLD_RTOL * max(1.0, peak)
    hits = []
    for name, arr in params.items():
        if name in used or arr.size != want.size or arr.dtype.kind != "f":
            continue
        if [d for d in arr.shape if d != 1] != [d for d in want.shape if d != 1]:
            continue
        delta = float(np.abs(arr.reshape(want.shape).astype(np.float64) - want).max())
        if delta <= bound:
            hits.append((name, delta))
    return hits[0] if len(hits) == 1 else None


_CONVS = {"Conv2D": hwio_to_oihw, "DepthwiseConv2dNative": depthwise_to_oihw}
_BATCHNORMS = ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")


def _source_of(graph: Any, tensor: str, tensors: Mapping[str, Any]) -> str | None:
    """The source tensor a graph input reads, through Identity / ``/read`` chains."""
    node = tensor.lstrip("^").rsplit(":", 1)[0]
    for _ in range(8):
        if node in tensors:
            return node
        data = graph.nodes.get(node)
        if data is None or data["op_type"] not in ("Identity", "ReadVariableOp") \
                or not data["inputs"]:
            return None
        node = data["inputs"][0].rsplit(":", 1)[0]
    return None


def trace_batchnorm_folds(graph: Any, tensors: Mapping[str, Any],
                          params: Mapping[str, np.ndarray],
                          load: Callable[[str], np.ndarray]) -> list[Fold]:
    """Conv2D / depthwise (+ BiasAdd) + FusedBatchNorm chains folded into conv weight and bias.

    ``W' = W * s`` and ``b' = beta - mean * s (+ b * s)`` with ``s = gamma / sqrt(var + eps)``,
    recomputed in float64 from the source tensors and matched against ``params``.
    """
    folds: list[Fold] = []
    used: set[str] = set()
    for name, data in graph.nodes(data=True):
        if data["op_type"] not in _BATCHNORMS or len(data["inputs"]) < 5:
            continue
        if data["attrs"].get("is_training") is True:
            continue
        bn = [_source_of(graph, t, tensors) for t in data["inputs"][1:5]]
        if any(b is None for b in bn):
            continue
        prev = data["inputs"][0].rsplit(":", 1)[0]
        bias = None
        if graph.nodes[prev]["op_type"] == "BiasAdd":
            bias = _source_of(graph, graph.nodes[prev]["inputs"][1], tensors)
            prev = graph.nodes[prev]["inputs"][0].rsplit(":", 1)[0]
        conv = graph.nodes.get(prev)
        if conv is None or conv["op_type"] not in _CONVS:
            continue
        w = _source_of(graph, conv["inputs"][1], tensors)
        if w is None:
            continue
        gamma, beta, mean, var = (load(b).astype(np.float64) for b in bn)
        eps = float(data["attrs"].get("epsilon", 1e-3))
        s = gamma / np.sqrt(var + eps)
        weight = _CONVS[conv["op_type"]](load(w).astype(np.float64))
        fw = weight * s.reshape(-1, *([1] * (weight.ndim - 1)))
        fb = beta - mean * s + (load(bias).astype(np.float64) * s if bias else 0.0)
        hw = find_close(fw, params, used)
        hb = find_close(fb, params, used)
        if hw is None or hb is None:
            continue
        used.update((hw[0], hb[0]))
        how = f"BatchNorm {name} folded into {conv['op_type']} {prev} (eps {eps:g})"
        folds.append(Fold((w, bn[0], bn[3]), hw[0], how, hw[1]))
        folds.append(Fold(tuple(x for x in (bn[1], bn[2], bn[0], bn[3], bias) if x), hb[0],
                          how, hb[1]))
    return folds


def _scalar_const(graph: Any, tensor: str) -> float | None:
    node = graph.nodes.get(tensor.lstrip("^").rsplit(":", 1)[0])
    if node is None or node["op_type"] != "Const":
        return None
    value = node["attrs"].get("value")
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind == "f":
        return float(value.ravel()[0])
    return None


def trace_constant_scaling(graph: Any, name: str, arr: np.ndarray,
                           params: Mapping[str, np.ndarray], hops: int = 3) -> Fold | None:
    """``name`` folded with a scalar Const it is multiplied (or divided) by downstream.

    Exporters reassociate ``(a * x) * 0.5`` into ``(a * 0.5) * x``; the scalars are those
    feeding a Mul / RealDiv within ``hops`` data edges of the tensor (gradient ops aside).
    """
    frontier, seen, scales = {name}, {name}, []
    for _ in range(hops):
        nxt = set()
        for n in frontier:
            for succ in graph.successors(n):
                if succ in seen or succ.startswith("gradients/"):
                    continue
                data = graph.nodes[succ]
                if data["op_type"] in ("Mul", "RealDiv"):
                    for inp in data["inputs"]:
                        c = _scalar_const(graph, inp)
                        if c:
                            scales.append((c if data["op_type"] == "Mul" else 1 / c, succ))
                seen.add(succ)
                nxt.add(succ)
        frontier = nxt
    for c, node in scales:
        for cand, transform in layout_candidates(arr.astype(np.float64) * c):
            hit = find_close(cand, params)
            if hit:
                how = f"multiplied by the constant {c:g} of {node}" + (
                    f", {transform}" if transform else "")
                return Fold((name,), hit[0], how, hit[1])
    return None
