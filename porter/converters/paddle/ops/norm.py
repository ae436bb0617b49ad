"""batch_norm, layer_norm, instance_norm, group_norm (inference form)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.registry import paddle_op


def batch_norm_nhwc(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor,
                    weight: torch.Tensor | None, bias: torch.Tensor | None,
                    eps: float) -> torch.Tensor:
    """Inference batch norm over the last (channel) axis."""
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def _batch_norm(op: PaddleOp) -> Op:
    eps = float(op.attr("epsilon", 1e-5))
    fmt = str(op.attr("data_layout", op.attr("data_format", "NCHW"))).upper()
    args = (In(0), In(1), In(2), In(3), In(4))
    if fmt in ("NHWC", "NDHWC", "NLC"):
        return Op(batch_norm_nhwc, (*args, eps))
    return Op(F.batch_norm, args, {"training": False, "momentum": 0.0, "eps": eps})


@paddle_op("batch_norm", inputs=("X", "Mean", "Variance", "Scale", "Bias"), outputs=("Y",),
           names=("input", "running_mean", "running_var", "weight", "bias"))
@paddle_op("pd_op.batch_norm", "pd_op.batch_norm_",
           names=("input", "running_mean", "running_var", "weight", "bias"))
def _bn(op: PaddleOp, ctx: Context) -> Op:
    return _batch_norm(op)


def layer_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               begin_norm_axis: int, eps: float) -> torch.Tensor:
    """Paddle's layer norm: normalise over axes ``begin_norm_axis:``; scale and bias are
    stored flattened."""
    shape = list(x.shape[begin_norm_axis:])
    w = None if weight is None else weight.reshape(shape)
    b = None if bias is None else bias.reshape(shape)
    return F.layer_norm(x, shape, w, b, eps)


@paddle_op("layer_norm", inputs=("X", "Scale", "Bias"), outputs=("Y",),
           names=("input", "weight", "bias"))
@paddle_op("pd_op.layer_norm", names=("input", "weight", "bias"))
def _ln(op: PaddleOp, ctx: Context) -> Op:
    return Op(layer_norm, (In(0), In(1), In(2), int(op.attr("begin_norm_axis", 1)),
                           float(op.attr("epsilon", 1e-5))))


@paddle_op("instance_norm", inputs=("X", "Scale", "Bias"), outputs=("Y",),
           names=("input", "weight", "bias"))
@paddle_op("pd_op.instance_norm", names=("input", "weight", "bias"))
def _in(op: PaddleOp, ctx: Context) -> Op:
    return Op(F.instance_norm, (In(0), None, None, In(1), In(2)),
              {"use_input_stats": True, "momentum": 0.0, "eps": float(op.attr("epsilon", 1e-5))})


def group_norm(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
               groups: int, eps: float) -> torch.Tensor:
    return F.group_norm(x, groups, weight, bias, eps)


@paddle_op("group_norm", inputs=("X", "Scale", "Bias"), outputs=("Y",),
           names=("input", "weight", "bias"))
@paddle_op("pd_op.group_norm", names=("input", "weight", "bias"))
def _gn(op: PaddleOp, ctx: Context) -> Op:
    if str(op.attr("data_layout", op.attr("data_format", "NCHW"))).upper() != "NCHW":
        raise Unsupported("group_norm in NHWC")
    return Op(group_norm, (In(0), In(1), In(2), int(op.attr("groups")),
                           float(op.attr("epsilon", 1e-5))))
