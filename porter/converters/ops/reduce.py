"""Reductions: ReduceSum/Mean/Max/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare."""

from __future__ import annotations

import torch

from porter.converters.context import Context, In, Node, Op
from porter.converters.ops.shape import as_ints
from porter.converters.registry import converter


def reduce(x: torch.Tensor, kind: str, axes=None, keepdims: int = 1,
           noop_with_empty_axes: int = 0) -> torch.Tensor:
    """One ONNX Reduce* op; empty ``axes`` reduces all dims unless ``noop_with_empty_axes``."""
    dims = as_ints(axes) if axes is not None else []
    if not dims:
        if noop_with_empty_axes:
            return x
        dims = list(range(x.dim()))
    dims = [d % max(x.dim(), 1) for d in dims]
    if x.dim() == 0:
        return x
    if x.dtype == torch.bool and kind in ("max", "min"):
        y = torch.any(x, dims, keepdim=bool(keepdims)) if kind == "max" else torch.all(
            x, dims, keepdim=bool(keepdims))
        return y
    if kind == "sum":
        y = torch.sum(x, dims, keepdim=bool(keepdims))
    elif kind == "mean":
        y = torch.mean(x, dims, keepdim=bool(keepdims))
    elif kind == "max":
        y = torch.amax(x, dims, keepdim=bool(keepdims)) if x.numel() else torch.full(
            _reduced(x, dims, keepdims), float("-inf") if x.is_floating_point() else
            torch.iinfo(x.dtype).min, dtype=x.dtype)
    elif kind == "min":
        y = torch.amin(x, dims, keepdim=bool(keepdims)) if x.numel() else torch.full(
            _reduced(x, dims, keepdims), float("inf") if x.is_floating_point() else
            torch.iinfo(x.dtype).max, dtype=x.dtype)
    elif kind == "prod":
        y = x
        for d in sorted(dims, reverse=True):
            y = torch.prod(y, d, keepdim=True)
        if not keepdims:
            y = y.reshape(_reduced(x, dims, keepdims))
    elif kind == "l1":
        y = torch.sum(torch.abs(x), dims, keepdim=bool(keepdims))
    elif kind == "l2":
        y = torch.sqrt(torch.sum(x * x, dims, keepdim=bool(keepdims)))
    elif kind == "sum_square":
        y = torch.sum(x * x, dims, keepdim=bool(keepdims))
    elif kind == "log_sum":
        y = torch.log(torch.sum(x, dims, keepdim=bool(keepdims)))
    else:  # log_sum_exp
        y = torch.logsumexp(x, dims, keepdim=bool(keepdims)) if x.numel() else torch.log(
            torch.sum(torch.exp(x), dims, keepdim=bool(keepdims)))
    return y.to(x.dtype)


def _reduced(x: torch.Tensor, dims: list[int], keepdims: int) -> list[int]:
    return [1 if i in dims else d for i, d in enumerate(x.shape)
            if keepdims or i not in dims]


_KINDS = {
    "ReduceSum": ("sum", (1, 11, 13), 13), "ReduceMean": ("mean", (1, 11, 13, 18), 18),
    "ReduceMax": ("max", (1, 11, 12, 13, 18, 20), 18),
    "ReduceMin": ("min", (1, 11, 12, 13, 18, 20), 18),
    "ReduceProd": ("prod", (1, 11, 13, 18), 18), "ReduceL1": ("l1", (1, 11, 13, 18), 18),
    "ReduceL2": ("l2", (1, 11, 13, 18), 18),
    "ReduceSumSquare": ("sum_square", (1, 11, 13, 18), 18),
    "ReduceLogSum": ("log_sum", (1, 11, 13, 18, 28), 18),
    "ReduceLogSumExp": ("log_sum_exp", (1, 11, 13, 18, 28), 18),
}


def _reduce(kind: str, axes_input_since: int):
    def convert(node: Node, ctx: Context) -> Op:
        if node.opset >= axes_input_since:
            axes = (tuple(ctx.ints(1)) if ctx.is_const(1) else In(1)) if ctx.has(1) else None
        else:
            a = node.attr("axes")
            axes = tuple(a) if a is not None else None
        return Op(reduce, (In(0), kind, axes, node.attr("keepdims", 1),
                           node.attr("noop_with_empty_axes", 0)))

    return convert


for _name, (_kind, _since, _axes_since) in _KINDS.items():
    converter(_name, since=_since)(_reduce(_kind, _axes_since))
