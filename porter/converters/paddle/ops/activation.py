"""Activations with Paddle's own constants (``hard_sigmoid``'s slope is 0.1666667, not 1/6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.registry import paddle_op

_UNARY = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp,
    "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "abs": torch.abs, "log": torch.log,
    "floor": torch.floor, "ceil": torch.ceil, "sin": torch.sin, "cos": torch.cos,
    "erf": torch.erf, "square": torch.square, "silu": F.silu, "softsign": F.softsign,
    "logical_not": torch.logical_not, "sign": torch.sign, "reciprocal": torch.reciprocal,
}


def _unary(fn):
    def convert(op: PaddleOp, ctx: Context) -> Op:
        return Op(fn, (In(0),))
    return convert


for _name, _fn in _UNARY.items():
    paddle_op(_name, inputs=("X",))(_unary(_fn))
    paddle_op(f"pd_op.{_name}", f"pd_op.{_name}_")(_unary(_fn))
paddle_op("round", inputs=("X",))(_unary(torch.round))
paddle_op("pd_op.round", "pd_op.round_")(_unary(torch.round))


def relu6(x: torch.Tensor, threshold: float = 6.0) -> torch.Tensor:
    return F.hardtanh(x, 0.0, threshold)


@paddle_op("relu6", inputs=("X",))
@paddle_op("pd_op.relu6", "pd_op.relu6_")
def _relu6(op: PaddleOp, ctx: Context) -> Op:
    t = float(op.attr("threshold", 6.0))
    return Op(F.relu6, (In(0),)) if t == 6.0 else Op(relu6, (In(0), t))


def hard_swish(x: torch.Tensor, threshold: float, scale: float, offset: float) -> torch.Tensor:
    """``x * clip(x + offset, 0, threshold) / scale``."""
    return x * torch.clamp(x + offset, 0.0, threshold) / scale


@paddle_op("hard_swish", inputs=("X",))
@paddle_op("pd_op.hardswish", "pd_op.hardswish_")
def _hard_swish(op: PaddleOp, ctx: Context) -> Op:
    t, s, o = (float(op.attr(k, d)) for k, d in (("threshold", 6.0), ("scale", 6.0),
                                                 ("offset", 3.0)))
    return Op(hard_swish, (In(0), t, s, o))


def hard_sigmoid(x: torch.Tensor, slope: float, offset: float) -> torch.Tensor:
    """``clip(slope * x + offset, 0, 1)``."""
    return torch.clamp(x * slope + offset, 0.0, 1.0)


@paddle_op("hard_sigmoid", inputs=("X",))
@paddle_op("pd_op.hardsigmoid", "pd_op.hardsigmoid_")
def _hard_sigmoid(op: PaddleOp, ctx: Context) -> Op:
    return Op(hard_sigmoid, (In(0), float(op.attr("slope", 0.2)), float(op.attr("offset", 0.5))))


def swish(x: torch.Tensor, beta: float) -> torch.Tensor:
    return x * torch.sigmoid(x * beta)


@paddle_op("swish", inputs=("X",))
@paddle_op("pd_op.swish", "pd_op.swish_")
def _swish(op: PaddleOp, ctx: Context) -> Op:
    beta = float(op.attr("beta", 1.0))
    return Op(F.silu, (In(0),)) if beta == 1.0 else Op(swish, (In(0), beta))


@paddle_op("gelu", inputs=("X",))
@paddle_op("pd_op.gelu", "pd_op.gelu_")
def _gelu(op: PaddleOp, ctx: Context) -> Op:
    return Op(F.gelu, (In(0),), {"approximate": "tanh" if op.attr("approximate") else "none"})


@paddle_op("leaky_relu", inputs=("X",))
@paddle_op("pd_op.leaky_relu", "pd_op.leaky_relu_")
def _leaky_relu(op: PaddleOp, ctx: Context) -> Op:
    slope = op.attr("alpha", op.attr("negative_slope", 0.02))
    return Op(F.leaky_relu, (In(0), float(slope)))


def elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.elu(x, alpha)


@paddle_op("elu", inputs=("X",))
@paddle_op("pd_op.elu", "pd_op.elu_")
def _elu(op: PaddleOp, ctx: Context) -> Op:
    return Op(elu, (In(0), float(op.attr("alpha", 1.0))))


def mish(x: torch.Tensor) -> torch.Tensor:
    return F.mish(x)


@paddle_op("mish", inputs=("X",))
@paddle_op("pd_op.mish")
def _mish(op: PaddleOp, ctx: Context) -> Op:
    if float(op.attr("threshold", 20.0)) != 20.0:
        raise Unsupported("mish with a threshold other than 20")
    return Op(mish, (In(0),))


def softplus(x: torch.Tensor, beta: float, threshold: float) -> torch.Tensor:
    return F.softplus(x, beta, threshold)


@paddle_op("softplus", inputs=("X",))
@paddle_op("pd_op.softplus")
def _softplus(op: PaddleOp, ctx: Context) -> Op:
    return Op(softplus, (In(0), float(op.attr("beta", 1.0)), float(op.attr("threshold", 20.0))))


def prelu(x: torch.Tensor, alpha: torch.Tensor, mode: str, channels_last: bool) -> torch.Tensor:
    """Paddle's PReLU: one slope (``all``), one per channel (``channel``) or one per element
    of a sample (``element``)."""
    if mode == "all":
        a = alpha.reshape([1] * x.dim())
    elif mode == "channel":
        shape = [1] * x.dim()
        shape[-1 if channels_last else 1] = -1
        a = alpha.reshape(shape)
    else:
        a = alpha.reshape([1] + list(x.shape[1:]))
    return torch.where(x > 0, x, x * a)


@paddle_op("prelu", inputs=("X", "Alpha"), names=("input", "weight"))
@paddle_op("pd_op.prelu", names=("input", "weight"))
def _prelu(op: PaddleOp, ctx: Context) -> Op:
    fmt = str(op.attr("data_format", "NCHW")).upper()
    return Op(prelu, (In(0), In(1), str(op.attr("mode", "all")), fmt in ("NHWC", "NLC", "NDHWC")))


@paddle_op("softmax", inputs=("X",))
@paddle_op("pd_op.softmax", "pd_op.softmax_")
def _softmax(op: PaddleOp, ctx: Context) -> Op:
    return Op(torch.softmax, (In(0), int(op.attr("axis", -1))))


@paddle_op("log_softmax", inputs=("X",))
@paddle_op("pd_op.log_softmax")
def _log_softmax(op: PaddleOp, ctx: Context) -> Op:
    return Op(torch.log_softmax, (In(0), int(op.attr("axis", -1))))


def clip(x: torch.Tensor, lo, hi) -> torch.Tensor:
    return torch.clamp(x, lo, hi)


@paddle_op("clip", inputs=("X", "Min", "Max"))
@paddle_op("pd_op.clip", "pd_op.clip_")
def _clip(op: PaddleOp, ctx: Context) -> Op:
    lo = ctx.scalar(1, "min", None) if (ctx.has(1) or not op.pir) else None
    hi = ctx.scalar(2, "max", None) if (ctx.has(2) or not op.pir) else None
    return Op(clip, (In(0), None if lo is None else float(lo), None if hi is None else float(hi)))


def dropout_downscale(x: torch.Tensor, p: float) -> torch.Tensor:
    """Inference dropout in Paddle's ``downgrade_in_infer`` mode: scale by the keep rate."""
    return x * (1.0 - p)


def identity(x):
    return x


@paddle_op("dropout", inputs=("X",))
def _dropout(op: PaddleOp, ctx: Context) -> Op:
    p = float(op.attr("dropout_prob", 0.5))
    if op.attr("dropout_implementation", "downgrade_in_infer") == "downgrade_in_infer":
        return Op(dropout_downscale, (In(0), p))
    return Op(identity, (In(0),))


@paddle_op("pd_op.dropout")
def _dropout_pir(op: PaddleOp, ctx: Context) -> Op:
    p = float(ctx.scalar(2, "p", 0.5)) if ctx.has(2) else float(op.attr("p", 0.5))
    if op.attr("mode", "upscale_in_train") == "downgrade_in_infer":
        return Op(dropout_downscale, (In(0), p))
    return Op(identity, (In(0),))


paddle_op("assign", "share_data", "memcpy", "memcpy_d2h", "memcpy_h2d", inputs=("X",))(
    _unary(identity))
paddle_op("pd_op.assign", "pd_op.assign_", "pd_op.share_data_", "pd_op.memcpy_d2h",
          "pd_op.memcpy_h2d")(_unary(identity))


def hardtanh(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return F.hardtanh(x, lo, hi)


@paddle_op("brelu", "hardtanh", inputs=("X",))
@paddle_op("pd_op.hardtanh", "pd_op.hardtanh_")
def _hardtanh(op: PaddleOp, ctx: Context) -> Op:
    return Op(hardtanh, (In(0), float(op.attr("t_min", -1.0)), float(op.attr("t_max", 1.0))))


@paddle_op("logsigmoid", inputs=("X",))
@paddle_op("pd_op.logsigmoid")
def _logsigmoid(op: PaddleOp, ctx: Context) -> Op:
    return Op(F.logsigmoid, (In(0),))
