"""Reductions (mean/sum/max/min/prod) and arg_max/arg_min."""

from __future__ import annotations

import torch

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported, torch_dtype
from porter.converters.paddle.registry import paddle_op


def reduce(x: torch.Tensor, kind: str, dims: list, keepdim: bool) -> torch.Tensor:
    """A reduction over ``dims`` (all axes when empty), Paddle's ``reduce_all`` included."""
    dims = [d for d in dims] if dims else list(range(x.dim()))
    if not dims:
        return x
    if kind == "mean":
        return x.mean(dim=dims, keepdim=keepdim)
    if kind == "sum":
        return x.sum(dim=dims, keepdim=keepdim)
    if kind == "max":
        return x.amax(dim=dims, keepdim=keepdim)
    if kind == "min":
        return x.amin(dim=dims, keepdim=keepdim)
    y = x
    for d in sorted([d % x.dim() for d in dims], reverse=True):
        y = y.prod(dim=d, keepdim=keepdim)
    return y


_KINDS = {"mean": "mean", "sum": "sum", "max": "max", "min": "min", "prod": "prod"}


def _legacy(kind):
    def convert(op: PaddleOp, ctx: Context) -> Op:
        dims = [] if op.attr("reduce_all", False) else list(op.attr("dim", []))
        return Op(reduce, (In(0), kind, dims, bool(op.attr("keep_dim", False))))
    return convert


def _pir(kind):
    def convert(op: PaddleOp, ctx: Context) -> Op:
        dims = ctx.int_list(1, "axis", [])
        if isinstance(dims, In):
            raise Unsupported(f"{op.type} over computed axes")
        return Op(reduce, (In(0), kind, list(dims or []), bool(op.attr("keepdim", False))))
    return convert


for _k in _KINDS:
    paddle_op(f"reduce_{_k}", inputs=("X",))(_legacy(_k))
    paddle_op(f"pd_op.{_k}")(_pir(_k))


def arg_extreme(x: torch.Tensor, largest: bool, axis: int, keepdim: bool, flatten: bool,
                dtype: torch.dtype) -> torch.Tensor:
    if flatten:
        x, axis = x.reshape(-1), 0
    fn = torch.argmax if largest else torch.argmin
    return fn(x, dim=axis, keepdim=keepdim and not flatten).to(dtype)


def _arg(largest: bool, pir: bool):
    def convert(op: PaddleOp, ctx: Context) -> Op:
        axis = int(ctx.scalar(1, "axis", 0)) if pir else int(op.attr("axis", 0))
        dtype = torch_dtype(op.attr("dtype", 3), torch.int64)
        return Op(arg_extreme, (In(0), largest, axis, bool(op.attr("keepdims", False)),
                                bool(op.attr("flatten", False)), dtype))
    return convert


paddle_op("arg_max", inputs=("X",))(_arg(True, False))
paddle_op("arg_min", inputs=("X",))(_arg(False, False))
paddle_op("pd_op.argmax")(_arg(True, True))
paddle_op("pd_op.argmin")(_arg(False, True))


def topk(x: torch.Tensor, k: int, axis: int, largest: bool, sorted_: bool) -> tuple:
    values, indices = torch.topk(x, k, dim=axis, largest=largest, sorted=sorted_)
    return values, indices


@paddle_op("top_k_v2", inputs=("X", "K"), outputs=("Out", "Indices"))
@paddle_op("pd_op.topk")
def _topk(op: PaddleOp, ctx: Context) -> Op:
    k = int(ctx.scalar(1, "k", 1))
    return Op(topk, (In(0), k, int(op.attr("axis", -1)), bool(op.attr("largest", True)),
                     bool(op.attr("sorted", True))), n_out=2)


def cumsum(x: torch.Tensor, axis: int, flatten: bool, exclusive: bool, reverse: bool
           ) -> torch.Tensor:
    """Paddle cumsum, with its ``flatten``, ``exclusive`` and ``reverse`` options."""
    if flatten:
        x, axis = x.reshape(-1), 0
    if reverse:
        x = x.flip(axis)
    y = torch.cumsum(x, dim=axis)
    if exclusive:
        y = y - x
    return y.flip(axis) if reverse else y


@paddle_op("cumsum", inputs=("X",))
def _cumsum_legacy(op: PaddleOp, ctx: Context) -> Op:
    return Op(cumsum, (In(0), int(op.attr("axis", -1)), bool(op.attr("flatten", False)),
                       bool(op.attr("exclusive", False)), bool(op.attr("reverse", False))))


@paddle_op("pd_op.cumsum", "pd_op.cumsum_")
def _cumsum(op: PaddleOp, ctx: Context) -> Op:
    return Op(cumsum, (In(0), int(ctx.scalar(1, "axis", -1)), bool(op.attr("flatten", False)),
                       bool(op.attr("exclusive", False)), bool(op.attr("reverse", False))))
