"""matmul, matmul_v2, mul, fc, bmm. Paddle stores Linear weights as [in, out], which
``x @ w`` uses as they are."""

from __future__ import annotations

import math

import torch

from porter.converters.paddle.context import Context, In, Op, PaddleOp
from porter.converters.paddle.registry import paddle_op


def matmul(x: torch.Tensor, y: torch.Tensor, trans_x: bool, trans_y: bool) -> torch.Tensor:
    """``torch.matmul`` with Paddle's optional transposes of the last two axes."""
    if trans_x and x.dim() > 1:
        x = x.transpose(-1, -2)
    if trans_y and y.dim() > 1:
        y = y.transpose(-1, -2)
    return torch.matmul(x, y)


def matmul_scaled(x: torch.Tensor, y: torch.Tensor, trans_x: bool, trans_y: bool,
                  alpha: float) -> torch.Tensor:
    return matmul(x, y, trans_x, trans_y) * alpha


@paddle_op("matmul_v2", inputs=("X", "Y"), names=("input", "weight"))
@paddle_op("pd_op.matmul", names=("input", "weight"))
def _matmul_v2(op: PaddleOp, ctx: Context) -> Op:
    tx = bool(op.attr("trans_x", op.attr("transpose_x", False)))
    ty = bool(op.attr("trans_y", op.attr("transpose_y", False)))
    if not tx and not ty:
        return Op(torch.matmul, (In(0), In(1)))
    return Op(matmul, (In(0), In(1), tx, ty))


@paddle_op("matmul", inputs=("X", "Y"), names=("input", "weight"))
def _matmul_v1(op: PaddleOp, ctx: Context) -> Op:
    tx, ty = bool(op.attr("transpose_X", False)), bool(op.attr("transpose_Y", False))
    alpha = float(op.attr("alpha", 1.0))
    if alpha != 1.0:
        return Op(matmul_scaled, (In(0), In(1), tx, ty, alpha))
    return Op(matmul, (In(0), In(1), tx, ty))


def mul(x: torch.Tensor, y: torch.Tensor, x_num_col_dims: int, y_num_col_dims: int
        ) -> torch.Tensor:
    """Paddle's ``mul``: both operands flattened to 2-D at their ``num_col_dims``."""
    xs, ys = list(x.shape), list(y.shape)
    x2 = x.reshape(math.prod(xs[:x_num_col_dims]), -1)
    y2 = y.reshape(math.prod(ys[:y_num_col_dims]), -1)
    return torch.matmul(x2, y2).reshape(xs[:x_num_col_dims] + ys[y_num_col_dims:])


@paddle_op("mul", inputs=("X", "Y"), names=("input", "weight"))
def _mul(op: PaddleOp, ctx: Context) -> Op:
    return Op(mul, (In(0), In(1), int(op.attr("x_num_col_dims", 1)),
                    int(op.attr("y_num_col_dims", 1))))


def fc(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, in_num_col_dims: int,
       relu: bool) -> torch.Tensor:
    """Paddle's fused ``fc``: flatten at ``in_num_col_dims``, ``x @ w + b``, optional ReLU."""
    lead = list(x.shape[:in_num_col_dims])
    y = torch.matmul(x.reshape(lead + [-1]), w)
    if b is not None:
        y = y + b.reshape(-1)
    return torch.relu(y) if relu else y


@paddle_op("fc", inputs=("Input", "W", "Bias"), names=("input", "weight", "bias"))
@paddle_op("pd_op.fc", names=("input", "weight", "bias"))
def _fc(op: PaddleOp, ctx: Context) -> Op:
    return Op(fc, (In(0), In(1), In(2), int(op.attr("in_num_col_dims", 1)),
                   op.attr("activation_type", "") == "relu"))


@paddle_op("bmm", inputs=("X", "Y"))
@paddle_op("pd_op.bmm")
def _bmm(op: PaddleOp, ctx: Context) -> Op:
    return Op(torch.bmm, (In(0), In(1)))
