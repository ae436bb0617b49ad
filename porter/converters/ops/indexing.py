"""Indexing ops: Gather*, Scatter*, TopK, ArgMax/ArgMin, OneHot, NonZero, Compress, CumSum."""

from __future__ import annotations

import torch

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter


def gather(x: torch.Tensor, indices: torch.Tensor, axis: int = 0) -> torch.Tensor:
    axis = axis % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices)
    if idx.dim() == 0:
        return x.select(axis, int(idx))
    out = torch.index_select(x, axis, idx.reshape(-1))
    return out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))


@converter("Gather", since=(1, 11, 13))
def _gather(node: Node, ctx: Context) -> Op:
    return Op(gather, (In(0), In(1), node.attr("axis", 0)))


def gather_elements(x: torch.Tensor, indices: torch.Tensor, axis: int = 0) -> torch.Tensor:
    axis = axis % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices)
    return torch.gather(x, axis, idx.long())


@converter("GatherElements", since=(11, 13))
def _gather_elements(node: Node, ctx: Context) -> Op:
    return Op(gather_elements, (In(0), In(1), node.attr("axis", 0)))


def gather_nd(x: torch.Tensor, indices: torch.Tensor, batch_dims: int = 0) -> torch.Tensor:
    b = batch_dims
    batch = tuple(x.shape[:b])
    nb = 1
    for d in batch:
        nb *= d
    k = indices.shape[-1]
    xs = x.reshape((nb,) + tuple(x.shape[b:]))
    idx = indices.reshape(nb, -1, k).long()
    dims = torch.tensor(x.shape[b:b + k])
    idx = torch.where(idx < 0, idx + dims, idx)
    ar = torch.arange(nb).reshape(nb, 1).expand(nb, idx.shape[1])
    out = xs[(ar,) + tuple(idx[..., j] for j in range(k))]
    return out.reshape(tuple(indices.shape[:-1]) + tuple(x.shape[b + k:]))


@converter("GatherND", since=(11, 12, 13))
def _gather_nd(node: Node, ctx: Context) -> Op:
    return Op(gather_nd, (In(0), In(1), node.attr("batch_dims", 0)))


def scatter_elements(x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor,
                     axis: int = 0, reduction: str = "none") -> torch.Tensor:
    axis = axis % x.dim()
    idx = torch.where(indices < 0, indices + x.shape[axis], indices).long()
    if reduction == "none":
        return x.scatter(axis, idx, updates)
    red = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}[reduction]
    return x.scatter_reduce(axis, idx, updates, reduce=red, include_self=True)


@converter("ScatterElements", since=(11, 13, 16, 18))
def _scatter_elements(node: Node, ctx: Context) -> Op:
    return Op(scatter_elements, (In(0), In(1), In(2), node.attr("axis", 0),
                                 node.attr("reduction", "none")))


@converter("Scatter", since=(9, 11))
def _scatter(node: Node, ctx: Context) -> Op:
    return Op(scatter_elements, (In(0), In(1), In(2), node.attr("axis", 0)))


def scatter_nd(x: torch.Tensor, indices: torch.Tensor, updates: torch.Tensor,
               reduction: str = "none") -> torch.Tensor:
    out = x.clone()
    k = indices.shape[-1]
    idx = indices.reshape(-1, k).long()
    upd = updates.reshape((idx.shape[0],) + tuple(x.shape[k:]))
    for i in range(idx.shape[0]):
        key = tuple(int(v) for v in idx[i])
        if reduction == "add":
            out[key] = out[key] + upd[i]
        elif reduction == "mul":
            out[key] = out[key] * upd[i]
        elif reduction == "max":
            out[key] = torch.maximum(out[key], upd[i])
        elif reduction == "min":
            out[key] = torch.minimum(out[key], upd[i])
        else:
            out[key] = upd[i]
    return out


@converter("ScatterND", since=(11, 13, 16, 18))
def _scatter_nd(node: Node, ctx: Context) -> Op:
    return Op(scatter_nd, (In(0), In(1), In(2), node.attr("reduction", "none")))


def topk(x: torch.Tensor, k, axis: int = -1, largest: int = 1, sorted: int = 1) -> tuple:
    k = int(k.reshape(-1)[0]) if isinstance(k, torch.Tensor) else int(k)
    axis = axis % x.dim()
    if torch.jit.is_tracing():  # torch.onnx (no stable sort there): ONNX TopK, ONNX's own ties
        return torch.topk(x, k, dim=axis, largest=bool(largest), sorted=True)
    if largest:
        # stable order for ties: smaller index first (ONNX), via a descending stable sort
        vals, idx = torch.sort(x, dim=axis, descending=True, stable=True)
    else:
        vals, idx = torch.sort(x, dim=axis, descending=False, stable=True)
    return vals.narrow(axis, 0, k), idx.narrow(axis, 0, k)


@converter("TopK", since=(1, 10, 11, 24))
def _topk(node: Node, ctx: Context) -> Op:
    k = node.attr("k") if node.opset < 10 else (
        ctx.ints(1)[0] if ctx.is_const(1) else In(1))
    return Op(topk, (In(0), k, node.attr("axis", -1), node.attr("largest", 1),
                     node.attr("sorted", 1)), n_out=2)


def arg_reduce(x: torch.Tensor, largest: bool, axis: int = 0, keepdims: int = 1,
               select_last_index: int = 0) -> torch.Tensor:
    axis = axis % x.dim()
    if select_last_index:
        x = x.flip(axis)
    out = torch.argmax(x, dim=axis, keepdim=True) if largest else torch.argmin(
        x, dim=axis, keepdim=True)
    if select_last_index:
        out = x.shape[axis] - 1 - out
    return out if keepdims else out.squeeze(axis)


def _arg(largest: bool):
    def convert(node: Node, ctx: Context) -> Op:
        return Op(arg_reduce, (In(0), largest, node.attr("axis", 0), node.attr("keepdims", 1),
                               node.attr("select_last_index", 0)))

    return convert


converter("ArgMax", since=(1, 11, 12, 13))(_arg(True))
converter("ArgMin", since=(1, 11, 12, 13))(_arg(False))


def one_hot(indices: torch.Tensor, depth, values: torch.Tensor, axis: int = -1) -> torch.Tensor:
    d = int(depth.reshape(-1)[0].item()) if isinstance(depth, torch.Tensor) else int(depth)
    idx = indices.long()
    idx = torch.where(idx < 0, idx + d, idx)
    valid = (idx >= 0) & (idx < d)
    oh = torch.nn.functional.one_hot(torch.where(valid, idx, 0), d) * valid.unsqueeze(-1)
    rank = indices.dim() + 1
    axis = axis % rank
    oh = oh.movedim(-1, axis)
    return torch.where(oh.bool(), values[1], values[0])


@converter("OneHot", since=(9, 11, 28))
def _one_hot(node: Node, ctx: Context) -> Op:
    return Op(one_hot, (In(0), In(1), In(2), node.attr("axis", -1)))


def nonzero(x: torch.Tensor) -> torch.Tensor:
    return torch.nonzero(x).t().contiguous()


@converter("NonZero", since=(9, 13))
def _nonzero(node: Node, ctx: Context) -> Op:
    return Op(nonzero, (In(0),))


def compress(x: torch.Tensor, condition: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    idx = torch.nonzero(condition.bool()).reshape(-1)
    if axis is None:
        return x.reshape(-1)[idx[idx < x.numel()]]
    idx = idx[idx < x.shape[axis]]
    return torch.index_select(x, axis, idx)


@converter("Compress", since=(9, 11, 28))
def _compress(node: Node, ctx: Context) -> Op:
    return Op(compress, (In(0), In(1), node.attr("axis")))


def cumsum(x: torch.Tensor, axis, exclusive: int = 0, reverse: int = 0,
           prod: bool = False) -> torch.Tensor:
    a = int(axis.reshape(-1)[0]) if isinstance(axis, torch.Tensor) else int(axis)
    if reverse:
        x = x.flip(a)
    y = torch.cumprod(x, a) if prod else torch.cumsum(x, a)
    if exclusive:
        ident = torch.ones_like(x.narrow(a, 0, 1)) if prod else torch.zeros_like(x.narrow(a, 0, 1))
        y = torch.cat([ident, y.narrow(a, 0, x.shape[a] - 1)], a)
    if reverse:
        y = y.flip(a)
    return y.to(x.dtype)


def _cum(prod: bool):
    def convert(node: Node, ctx: Context) -> Op:
        axis = ctx.ints(1)[0] if ctx.is_const(1) else In(1)
        return Op(cumsum, (In(0), axis, node.attr("exclusive", 0), node.attr("reverse", 0),
                           prod))

    return convert


converter("CumSum", since=(11, 14))(_cum(False))
converter("CumProd", since=(26,))(_cum(True))


def reverse_sequence(x: torch.Tensor, lens: torch.Tensor, batch_axis: int = 1,
                     time_axis: int = 0) -> torch.Tensor:
    out = x.clone()
    for b in range(x.shape[batch_axis]):
        n = int(lens[b])
        xb = x.select(batch_axis, b)
        ta = time_axis if time_axis < batch_axis else time_axis - 1
        part = xb.narrow(ta, 0, n).flip(ta)
        out.select(batch_axis, b).narrow(ta, 0, n).copy_(part)
    return out


@converter("ReverseSequence", since=(10, 28))
def _reverse_sequence(node: Node, ctx: Context) -> Op:
    return Op(reverse_sequence, (In(0), In(1), node.attr("batch_axis", 1),
                                 node.attr("time_axis", 0)))
