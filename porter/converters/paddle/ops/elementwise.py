"""Binary elementwise ops and ``scale``.

Legacy ``elementwise_*`` ops broadcast ``Y`` from position ``axis`` of ``X`` (``axis=1`` with
``Y`` of shape [C] against NCHW adds per channel); ``axis=-1`` is numpy broadcasting, which is
all PIR ops use.
"""

from __future__ import annotations

import numpy as np
import torch

from porter.converters.paddle.context import Context, In, Op, PaddleOp
from porter.converters.paddle.registry import paddle_op


def align_y(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    """``y`` reshaped so that its first axis lines up with axis ``axis`` of ``x``."""
    if axis < 0 or y.dim() >= x.dim():
        return y
    return y.reshape(list(y.shape) + [1] * (x.dim() - axis - y.dim()))


def add_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return x + align_y(x, y, axis)


def sub_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return x - align_y(x, y, axis)


def mul_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return x * align_y(x, y, axis)


def div(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Paddle's divide: true division for floats, truncation for integers."""
    if x.is_floating_point() or y.is_floating_point():
        return x / y
    return torch.div(x, y, rounding_mode="trunc")


def div_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return div(x, align_y(x, y, axis))


def pow_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.pow(x, align_y(x, y, axis))


def max_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.maximum(x, align_y(x, y, axis))


def min_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.minimum(x, align_y(x, y, axis))


def floordiv(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.div(x, y, rounding_mode="floor")


def floordiv_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return floordiv(x, align_y(x, y, axis))


def mod_axis(x: torch.Tensor, y: torch.Tensor, axis: int) -> torch.Tensor:
    return torch.remainder(x, align_y(x, y, axis))


_LEGACY = {"elementwise_add": (add_axis, torch.add, "{0} + {1}"),
           "elementwise_sub": (sub_axis, torch.sub, "{0} - {1}"),
           "elementwise_mul": (mul_axis, torch.mul, "{0} * {1}"),
           "elementwise_div": (div_axis, div, None),
           "elementwise_pow": (pow_axis, torch.pow, None),
           "elementwise_max": (max_axis, torch.maximum, None),
           "elementwise_min": (min_axis, torch.minimum, None),
           "elementwise_floordiv": (floordiv_axis, floordiv, None),
           "elementwise_mod": (mod_axis, torch.remainder, None)}
_PIR = {"add": (torch.add, "{0} + {1}"), "subtract": (torch.sub, "{0} - {1}"),
        "multiply": (torch.mul, "{0} * {1}"), "divide": (div, None),
        "elementwise_pow": (torch.pow, None), "maximum": (torch.maximum, None),
        "minimum": (torch.minimum, None), "floor_divide": (floordiv, None),
        "remainder": (torch.remainder, None)}
_COMPARE = {"equal": torch.eq, "not_equal": torch.ne, "less_than": torch.lt,
            "less_equal": torch.le, "greater_than": torch.gt, "greater_equal": torch.ge,
            "logical_and": torch.logical_and, "logical_or": torch.logical_or}


def shape_binary(a, b, kind: str) -> list:
    """Arithmetic on shape values (python lists of sizes, or one size), size by size, so
    it stays symbolic under tracing; a one-element side broadcasts."""
    xs = a if isinstance(a, list) else [a]
    ys = b if isinstance(b, list) else [b]
    if len(xs) == 1:
        xs = xs * len(ys)
    if len(ys) == 1:
        ys = ys * len(xs)
    out = []
    for x, y in zip(xs, ys):
        if kind == "add":
            out.append(x + y)
        elif kind == "sub":
            out.append(x - y)
        elif kind == "mul":
            out.append(x * y)
        elif kind == "floordiv":
            out.append(x // y)
        elif kind == "div":
            out.append(x // y if isinstance(x, int) and isinstance(y, int) else x / y)
        else:
            out.append(x % y)
    return out if isinstance(a, list) or isinstance(b, list) else out[0]


def shape_scale(x, s: float, bias: float, bias_after_scale: bool):
    """``scale`` on a shape value (sizes stay ints where the factors are whole numbers)."""
    def one(v):
        r = v * s + bias if bias_after_scale else (v + bias) * s
        return int(r) if float(s).is_integer() and float(bias).is_integer() else r
    return [one(v) for v in x] if isinstance(x, list) else one(x)


_SHAPE_KINDS = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "floordiv": "floordiv",
                "mod": "mod", "subtract": "sub", "multiply": "mul", "divide": "div",
                "floor_divide": "floordiv", "remainder": "mod"}


def _shape_op(op: PaddleOp, ctx: Context) -> Op | None:
    """The shape-value form of a binary op whose operand is a shape value, else None."""
    if not (ctx.shape_like(0) or ctx.shape_like(1)):
        return None
    name = op.type.rpartition(".")[2].rstrip("_").replace("elementwise_", "")
    kind = _SHAPE_KINDS.get(name)
    if kind is None:
        return None
    args = []
    for i in (0, 1):
        if ctx.is_const(i):
            v = ctx.ints(i)
            args.append(v if np.asarray(ctx.const(i)).ndim else v[0])
        else:
            args.append(In(i))
    return Op(shape_binary, (*args, kind))


def _legacy(with_axis, plain, template):
    def convert(op: PaddleOp, ctx: Context) -> Op:
        shaped = _shape_op(op, ctx)
        if shaped is not None:
            return shaped
        axis = int(op.attr("axis", -1))
        y = ctx.const(1)
        x = ctx.const(0)
        if axis == -1 or (y is not None and x is None and y.dim() == 0):
            return Op(plain, (In(0), In(1)), template=template)
        return Op(with_axis, (In(0), In(1), axis))
    return convert


def _pir(fn, template):
    def convert(op: PaddleOp, ctx: Context) -> Op:
        shaped = _shape_op(op, ctx)
        if shaped is not None:
            return shaped
        return Op(fn, (In(0), In(1)), template=template)
    return convert


for _name, (_axis_fn, _fn, _tpl) in _LEGACY.items():
    paddle_op(_name, inputs=("X", "Y"), names=("input", "weight" if "mul" in _name else
                                               "bias" if "add" in _name else "other"))(
        _legacy(_axis_fn, _fn, _tpl))
for _name, (_fn, _tpl) in _PIR.items():
    paddle_op(f"pd_op.{_name}", f"pd_op.{_name}_",
              names=("input", "weight" if _name == "multiply" else
                     "bias" if _name == "add" else "other"))(_pir(_fn, _tpl))
for _name, _fn in _COMPARE.items():
    paddle_op(_name, inputs=("X", "Y"))(_pir(_fn, None))
    paddle_op(f"pd_op.{_name}", f"pd_op.{_name}_")(_pir(_fn, None))


def scale(x: torch.Tensor, s: float, bias: float, bias_after_scale: bool) -> torch.Tensor:
    """``s * x + bias`` (or ``s * (x + bias)``), in ``x``'s dtype as Paddle computes it."""
    if bias_after_scale:
        y = x * s + bias if s != 1.0 else x + bias
    else:
        y = (x + bias) * s
    return y.to(x.dtype)


@paddle_op("scale", inputs=("X", "ScaleTensor"))
@paddle_op("pd_op.scale", "pd_op.scale_")
def _scale(op: PaddleOp, ctx: Context) -> Op:
    s = float(ctx.scalar(1, "scale", 1.0))
    if ctx.shape_like(0):
        return Op(shape_scale, (In(0), s, float(op.attr("bias", 0.0)),
                                bool(op.attr("bias_after_scale", True))))
    return Op(scale, (In(0), s, float(op.attr("bias", 0.0)),
                      bool(op.attr("bias_after_scale", True))))


def pow_scalar(x: torch.Tensor, factor: float) -> torch.Tensor:
    return torch.pow(x, factor)


@paddle_op("pow", inputs=("X", "FactorTensor"))
def _pow(op: PaddleOp, ctx: Context) -> Op:
    return Op(pow_scalar, (In(0), float(ctx.scalar(1, "factor", 1.0))))


@paddle_op("pd_op.pow", "pd_op.pow_")
def _pow_pir(op: PaddleOp, ctx: Context) -> Op:
    return Op(pow_scalar, (In(0), float(op.attr("y", 1.0))))


def where(cond: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(cond, x, y)


@paddle_op("where", inputs=("Condition", "X", "Y"))
@paddle_op("pd_op.where", "pd_op.where_")
def _where(op: PaddleOp, ctx: Context) -> Op:
    return Op(where, (In(0), In(1), In(2)))


def add_n(xs) -> torch.Tensor:
    """The sum of a list of tensors (legacy ``sum``, PIR ``add_n``)."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


@paddle_op("sum", inputs=("X*",))
@paddle_op("pd_op.add_n", "pd_op.add_n_")
def _add_n(op: PaddleOp, ctx: Context) -> Op:
    return Op(add_n, (In(0),))
