"""Matrix ops and softmax family: MatMul, Gemm, Einsum, Softmax, LogSoftmax, Hardmax, Det."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from porter.converters.context import Context, In, Node, Op
from porter.converters.params import new_module, weight_tensor
from porter.converters.registry import converter


def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.matmul(a, b)


@converter("MatMul", since=(1, 9, 13))
def _matmul(node: Node, ctx: Context) -> Op:
    b = ctx.const(1)
    if b is not None and b.ndim == 2 and b.dtype.kind == "f" and not ctx.is_const(0):
        lin = new_module(nn.Linear, b.shape[0], b.shape[1], bias=False)
        lin.weight.data = weight_tensor(b.T)
        return Op(lin, (In(0),))
    return Op(torch.matmul, (In(0), In(1)), template="{0} @ {1}")


def gemm(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor | None = None, alpha: float = 1.0,
         beta: float = 1.0, trans_a: int = 0, trans_b: int = 0) -> torch.Tensor:
    if trans_a:
        a = a.t()
    if trans_b:
        b = b.t()
    y = torch.matmul(a, b)
    if alpha != 1.0:
        y = y * alpha
    if c is not None:
        y = y + (c * beta if beta != 1.0 else c)
    return y.to(a.dtype)


@converter("Gemm", since=(1, 6, 7, 9, 11, 13))
def _gemm(node: Node, ctx: Context) -> Op:
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    ta, tb = node.attr("transA", 0), node.attr("transB", 0)
    b, c = ctx.const(1), ctx.const(2)
    if (b is not None and b.dtype.kind == "f" and not ta and alpha == 1.0 and beta == 1.0
            and (not ctx.has(2) or (c is not None and c.ndim == 1
                                    and c.shape[0] == b.shape[0 if tb else 1]))):
        w = b if tb else b.T
        lin = new_module(nn.Linear, w.shape[1], w.shape[0], bias=ctx.has(2))
        lin.weight.data = weight_tensor(w)
        if ctx.has(2):
            lin.bias.data = weight_tensor(c)
        return Op(lin, (In(0),))
    return Op(gemm, (In(0), In(1), In(2) if ctx.has(2) else None),
              {"alpha": alpha, "beta": beta, "trans_a": ta, "trans_b": tb})


def einsum(equation: str, *xs: torch.Tensor) -> torch.Tensor:
    return torch.einsum(equation, *xs)


@converter("Einsum", since=(12, 28))
def _einsum(node: Node, ctx: Context) -> Op:
    eq = node.attr("equation").replace(" ", "")
    return Op(einsum, (eq, *(In(i) for i in range(len(node.inputs)))))


def softmax(x: torch.Tensor, axis: int = -1, log: bool = False,
            legacy: bool = False) -> torch.Tensor:
    """Softmax over ``axis``; ``legacy`` (opset < 13) flattens to 2-D at ``axis`` first."""
    fn = F.log_softmax if log else F.softmax
    if not legacy:
        return fn(x, dim=axis)
    axis = axis % x.dim()
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return fn(x.reshape(lead, -1), dim=1).reshape(x.shape)


def hardmax(x: torch.Tensor, axis: int = -1, legacy: bool = False) -> torch.Tensor:
    shape = x.shape
    if legacy:
        axis = axis % x.dim()
        lead = 1
        for d in x.shape[:axis]:
            lead *= d
        x, axis = x.reshape(lead, -1), 1
    idx = torch.argmax(x, dim=axis, keepdim=True)
    return torch.zeros_like(x).scatter(axis, idx, 1).reshape(shape)


def _softmax(log: bool):
    def convert(node: Node, ctx: Context) -> Op:
        legacy = node.opset < 13
        axis = node.attr("axis", 1 if legacy else -1)
        if not legacy:
            return Op(F.log_softmax if log else F.softmax, (In(0),), {"dim": axis})
        return Op(softmax, (In(0), axis, log, legacy))

    return convert


converter("Softmax", since=(1, 11, 13))(_softmax(False))
converter("LogSoftmax", since=(1, 11, 13))(_softmax(True))


@converter("Hardmax", since=(1, 11, 13))
def _hardmax(node: Node, ctx: Context) -> Op:
    legacy = node.opset < 13
    return Op(hardmax, (In(0), node.attr("axis", 1 if legacy else -1), legacy))


@converter("Det", since=(11, 22))
def _det(node: Node, ctx: Context) -> Op:
    return Op(torch.linalg.det, (In(0),))
