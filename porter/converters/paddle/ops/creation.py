"""Constants and dtypes: fill_constant/full, full_int_array, assign_value, full_like, cast,
arange. Constant ones are evaluated at conversion time, so they never become steps."""

from __future__ import annotations

import torch

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported, torch_dtype
from porter.converters.paddle.ops.tensor import as_ints
from porter.converters.paddle.registry import paddle_op


def full(shape, value: float, dtype: torch.dtype) -> torch.Tensor:
    return torch.full(as_ints(shape), value, dtype=dtype)


def _value(op: PaddleOp) -> float:
    s = op.attr("str_value", "")
    if isinstance(s, str) and s:
        try:
            return float(s)
        except ValueError:
            pass
    return float(op.attr("value", 0.0))


def _number(value: float, dtype: torch.dtype):
    return value if dtype.is_floating_point else (bool(value) if dtype == torch.bool
                                                  else int(value))


@paddle_op("fill_constant", inputs=("ValueTensor", "ShapeTensor", "ShapeTensorList*"))
def _fill_constant(op: PaddleOp, ctx: Context) -> Op:
    dtype = torch_dtype(op.attr("dtype", 5))
    if ctx.has(0):
        raise Unsupported("fill_constant with a ValueTensor")
    shape = (ctx.int_list(2) if ctx.has(2) else ctx.int_list(1, "shape", []))
    if not ctx.has(1) and not ctx.has(2):
        shape = list(op.attr("shape", []))
    return Op(full, (shape, _number(_value(op), dtype), dtype))


@paddle_op("pd_op.full", "pd_op.full_")
def _full(op: PaddleOp, ctx: Context) -> Op:
    dtype = torch_dtype(op.attr("dtype", "float32"))
    return Op(full, (list(op.attr("shape", [])), _number(float(op.attr("value", 0.0)), dtype),
                     dtype))


def constant(values: list, shape: list, dtype: torch.dtype) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype).reshape(shape)


@paddle_op("pd_op.full_int_array")
def _full_int_array(op: PaddleOp, ctx: Context) -> Op:
    values = [int(v) for v in op.attr("value", [])]
    return Op(constant, (values, [len(values)], torch_dtype(op.attr("dtype", "int64"))))


@paddle_op("assign_value", inputs=())
@paddle_op("pd_op.assign_value", "pd_op.assign_value_")
def _assign_value(op: PaddleOp, ctx: Context) -> Op:
    dtype = torch_dtype(op.attr("dtype", 5))
    values = op.attr("values")
    if values is None:
        for key in ("fp32_values", "int32_values", "int64_values", "bool_values",
                    "fp64_values"):
            if op.attr(key):
                values = op.attr(key)
                break
    if values is None:
        raise Unsupported("assign_value without values")
    return Op(constant, ([v for v in values], list(op.attr("shape", [len(values)])), dtype))


def full_like(x: torch.Tensor, value: float, dtype: torch.dtype | None) -> torch.Tensor:
    return torch.full_like(x, value, dtype=dtype or x.dtype)


@paddle_op("fill_any_like", inputs=("X",))
def _fill_any_like(op: PaddleOp, ctx: Context) -> Op:
    code = op.attr("dtype", -1)
    return Op(full_like, (In(0), float(op.attr("value", 0.0)),
                          None if code in (-1, None) else torch_dtype(code)))


@paddle_op("pd_op.full_like")
def _full_like(op: PaddleOp, ctx: Context) -> Op:
    code = op.attr("dtype", "undefined")
    dtype = None if code in ("undefined", None, -1) else torch_dtype(code)
    return Op(full_like, (In(0), float(ctx.scalar(1, "value", 0.0)), dtype))


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)``; a shape value (list of sizes) cast to an integer type stays a list."""
    if isinstance(x, list):
        return x if not dtype.is_floating_point else torch.tensor(x, dtype=dtype)
    return x.to(dtype)


@paddle_op("cast", inputs=("X",))
def _cast(op: PaddleOp, ctx: Context) -> Op:
    return Op(cast, (In(0), torch_dtype(op.attr("out_dtype", 5))))


@paddle_op("pd_op.cast", "pd_op.cast_")
def _cast_pir(op: PaddleOp, ctx: Context) -> Op:
    return Op(cast, (In(0), torch_dtype(op.attr("dtype", "float32"))))


def arange(start, end, step, dtype: torch.dtype) -> torch.Tensor:
    def num(v):
        return v.reshape(-1)[0].item() if isinstance(v, torch.Tensor) else v
    return torch.arange(num(start), num(end), num(step), dtype=dtype)


@paddle_op("range", inputs=("Start", "End", "Step"))
def _range(op: PaddleOp, ctx: Context) -> Op:
    return Op(arange, (In(0), In(1), In(2), torch_dtype(op.attr("dtype", 5), torch.float32)))


@paddle_op("pd_op.arange")
def _arange(op: PaddleOp, ctx: Context) -> Op:
    return Op(arange, (In(0), In(1), In(2), torch_dtype(op.attr("dtype", "int64"))))


@paddle_op("pd_op.full_with_tensor")
def _full_with_tensor(op: PaddleOp, ctx: Context) -> Op:
    dtype = torch_dtype(op.attr("dtype", "float32"))
    value = ctx.scalar(0, None, 0.0)
    shape = ctx.ints(1) if ctx.is_const(1) else In(1)
    return Op(full, (shape, _number(float(value), dtype), dtype))
