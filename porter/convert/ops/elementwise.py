"""Element-wise ops: unary math, activations, binary arithmetic and logic, Cast, Clip, Where."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from porter.convert.context import Context, In, Node, Op
from porter.convert.registry import converter

DTYPES = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 4: torch.uint16, 5: torch.int16,
    6: torch.int32, 7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64,
    12: torch.uint32, 13: torch.uint64, 14: torch.complex64, 15: torch.complex128,
    16: torch.bfloat16, 17: torch.float8_e4m3fn, 18: torch.float8_e4m3fnuz,
    19: torch.float8_e5m2, 20: torch.float8_e5m2fnuz,
}


def onnx_dtype(elem_type: int) -> torch.dtype:
    """The torch dtype of an ONNX TensorProto element type."""
    from porter.errors import UnsupportedOpError

    if elem_type not in DTYPES:
        raise UnsupportedOpError(f"tensor type {elem_type}", 0)
    return DTYPES[elem_type]


_UNARY = {
    "Abs": (torch.abs, (1, 6, 13)), "Neg": (torch.neg, (1, 6, 13)),
    "Exp": (torch.exp, (1, 6, 13)), "Log": (torch.log, (1, 6, 13)),
    "Sqrt": (torch.sqrt, (1, 6, 13)), "Floor": (torch.floor, (1, 6, 13)),
    "Ceil": (torch.ceil, (1, 6, 13)), "Sign": (torch.sign, (9, 13)),
    "Sin": (torch.sin, (7, 22)), "Cos": (torch.cos, (7, 22)), "Tan": (torch.tan, (7, 22)),
    "Asin": (torch.asin, (7, 22)), "Acos": (torch.acos, (7, 22)), "Atan": (torch.atan, (7, 22)),
    "Sinh": (torch.sinh, (9, 22)), "Cosh": (torch.cosh, (9, 22)),
    "Asinh": (torch.asinh, (9, 22)), "Acosh": (torch.acosh, (9, 22)),
    "Atanh": (torch.atanh, (9, 22)), "Tanh": (torch.tanh, (1, 6, 13)),
    "Sigmoid": (torch.sigmoid, (1, 6, 13)), "Relu": (torch.relu, (1, 6, 13, 14)),
    "Erf": (torch.erf, (9, 13)), "IsNaN": (torch.isnan, (9, 13, 20)),
    "Not": (torch.logical_not, (1,)), "BitwiseNot": (torch.bitwise_not, (18,)),
    "Round": (torch.round, (11, 22)), "Softsign": (F.softsign, (1, 22)),
    "Mish": (F.mish, (18, 22)),
}


def _unary(fn):
    def convert(node: Node, ctx: Context) -> Op:
        return Op(fn, (In(0),))

    return convert


for _name, (_fn, _since) in _UNARY.items():
    converter(_name, since=_since)(_unary(_fn))


def reciprocal(x: torch.Tensor) -> torch.Tensor:
    return torch.reciprocal(x)


@converter("Reciprocal", since=(1, 6, 13))
def _reciprocal(node: Node, ctx: Context) -> Op:
    return Op(torch.reciprocal, (In(0),))


@converter("Identity", since=(1, 13, 14, 16, 19, 21, 23, 24, 25))
def _identity(node: Node, ctx: Context) -> Op:
    return Op(identity, (In(0),), template="{0}")


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Div: integer division truncates toward zero."""
    if a.is_floating_point() or a.is_complex():
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def mod(a: torch.Tensor, b: torch.Tensor, fmod: int = 0) -> torch.Tensor:
    """ONNX Mod: the result takes the divisor's sign unless ``fmod`` (C fmod)."""
    if fmod or a.is_floating_point():
        return torch.fmod(a, b) if fmod else torch.remainder(a, b)
    return torch.remainder(a, b)


def pow_(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Pow: the result has the base's type."""
    return torch.pow(a, b).to(a.dtype)


def bit_shift(x: torch.Tensor, y: torch.Tensor, left: bool) -> torch.Tensor:
    # unsigned tensors: torch lacks shifts for uint32/64, go through int64 when safe
    if x.dtype in (torch.uint16, torch.uint32, torch.uint64):
        r = (x.to(torch.int64) << y.to(torch.int64)) if left else (
            x.to(torch.int64) >> y.to(torch.int64))
        return r.to(x.dtype)
    return x << y if left else x >> y


_BINARY = {
    "Add": (torch.add, (1, 6, 7, 13, 14), "{0} + {1}"),
    "Sub": (torch.sub, (1, 6, 7, 13, 14), "{0} - {1}"),
    "Mul": (torch.mul, (1, 6, 7, 13, 14), "{0} * {1}"),
    "Div": (div, (1, 6, 7, 13, 14), None),
    "Pow": (pow_, (1, 7, 12, 13, 15), None),
    "And": (torch.logical_and, (1, 7), None), "Or": (torch.logical_or, (1, 7), None),
    "Xor": (torch.logical_xor, (1, 7), None),
    "Equal": (torch.eq, (1, 7, 11, 13, 19), None), "Less": (torch.lt, (1, 7, 9, 13), None),
    "Greater": (torch.gt, (1, 7, 9, 13), None), "LessOrEqual": (torch.le, (12, 16), None),
    "GreaterOrEqual": (torch.ge, (12, 16), None),
    "BitwiseAnd": (torch.bitwise_and, (18,), None),
    "BitwiseOr": (torch.bitwise_or, (18,), None),
    "BitwiseXor": (torch.bitwise_xor, (18,), None),
}


def _binary(fn, template):
    def convert(node: Node, ctx: Context) -> Op:
        if node.opset < 7 and node.attr("broadcast", 0) and node.attr("axis") is not None:
            return Op(legacy_broadcast(fn), (In(0), In(1)), {"axis": node.attr("axis")})
        return Op(fn, (In(0), In(1)), template=template)

    return convert


def legacy_broadcast(fn):
    def call(a: torch.Tensor, b: torch.Tensor, axis: int) -> torch.Tensor:
        axis = axis % a.dim()
        b = b.reshape(tuple(b.shape) + (1,) * (a.dim() - axis - b.dim()))
        return fn(a, b)

    return call


for _name, (_fn, _since, _tpl) in _BINARY.items():
    converter(_name, since=_since)(_binary(_fn, _tpl))


@converter("Mod", since=(10, 13, 28))
def _mod(node: Node, ctx: Context) -> Op:
    return Op(mod, (In(0), In(1)), {"fmod": node.attr("fmod", 0)})


@converter("BitShift", since=(11, 28))
def _bitshift(node: Node, ctx: Context) -> Op:
    return Op(bit_shift, (In(0), In(1)), {"left": node.attr("direction") == "LEFT"})


def variadic(op: str, *xs: torch.Tensor) -> torch.Tensor:
    """Max / Min / Sum / Mean over any number of broadcast inputs."""
    out = xs[0]
    for x in xs[1:]:
        if op == "max":
            out = torch.maximum(out, x)
        elif op == "min":
            out = torch.minimum(out, x)
        else:
            out = out + x
    if op == "mean":
        out = out / len(xs)
    return out


def _variadic(op):
    def convert(node: Node, ctx: Context) -> Op:
        return Op(variadic, (op, *(In(i) for i in range(len(node.inputs)))))

    return convert


converter("Max", since=(1, 6, 8, 12, 13))(_variadic("max"))
converter("Min", since=(1, 6, 8, 12, 13))(_variadic("min"))
converter("Sum", since=(1, 6, 8, 13))(_variadic("sum"))
converter("Mean", since=(1, 6, 8, 13))(_variadic("mean"))


def clip(x: torch.Tensor, lo: torch.Tensor | float | None = None,
         hi: torch.Tensor | float | None = None) -> torch.Tensor:
    if lo is not None and hi is not None and not isinstance(lo, torch.Tensor) and not isinstance(
            hi, torch.Tensor):
        return torch.clamp(x, lo, hi)
    if lo is not None:
        x = torch.maximum(x, lo) if isinstance(lo, torch.Tensor) else torch.clamp(x, min=lo)
    if hi is not None:
        x = torch.minimum(x, hi) if isinstance(hi, torch.Tensor) else torch.clamp(x, max=hi)
    return x


@converter("Clip", since=(1, 6, 11, 12, 13))
def _clip(node: Node, ctx: Context) -> Op:
    if node.opset < 11:
        return Op(clip, (In(0), node.attr("min", -math.inf), node.attr("max", math.inf)))
    bounds = []
    for i in (1, 2):
        v = ctx.const(i)
        if not ctx.has(i):
            bounds.append(None)
        elif v is not None:
            b = v.reshape(()).item()
            bounds.append(int(b) if v.dtype.kind in "iu" else float(b))
        else:
            bounds.append(In(i))
    if all(isinstance(b, float) for b in bounds) and bounds == [0.0, 6.0]:
        return Op(F.relu6, (In(0),))
    return Op(clip, (In(0), *bounds))


def where(c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(c, a, b)


@converter("Where", since=(9, 16))
def _where(node: Node, ctx: Context) -> Op:
    return Op(torch.where, (In(0), In(1), In(2)))


def cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if x.dtype.is_floating_point and not dtype.is_floating_point and dtype != torch.bool:
        x = torch.trunc(x)
        if dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
            x = torch.clamp(x, min=0) if x.dtype != torch.float64 else x
    return x.to(dtype)


@converter("Cast", since=(1, 6, 9, 13, 19, 21, 23, 24, 25, 28))
def _cast(node: Node, ctx: Context) -> Op:
    to = node.attr("to")
    if isinstance(to, str):
        from onnx import TensorProto

        to = getattr(TensorProto, to.upper())
    return Op(cast, (In(0),), {"dtype": onnx_dtype(to)})


def cast_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return cast(x, like.dtype)


@converter("CastLike", since=(15, 19, 21, 23, 24, 25))
def _cast_like(node: Node, ctx: Context) -> Op:
    return Op(cast_like, (In(0), In(1)))


def is_inf(x: torch.Tensor, detect_negative: int = 1, detect_positive: int = 1) -> torch.Tensor:
    pos = torch.isposinf(x) if detect_positive else torch.zeros_like(x, dtype=torch.bool)
    neg = torch.isneginf(x) if detect_negative else torch.zeros_like(x, dtype=torch.bool)
    return pos | neg


@converter("IsInf", since=(10, 20))
def _isinf(node: Node, ctx: Context) -> Op:
    return Op(is_inf, (In(0),), {"detect_negative": node.attr("detect_negative", 1),
                                 "detect_positive": node.attr("detect_positive", 1)})


# ---- activations with attributes -------------------------------------------------------------

def hard_sigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


def hard_swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def thresholded_relu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > alpha, x, torch.zeros_like(x))


def shrink(x: torch.Tensor, bias: float, lambd: float) -> torch.Tensor:
    zero = torch.zeros_like(x)
    return torch.where(x < -lambd, x + bias, torch.where(x > lambd, x - bias, zero)).to(x.dtype)


def softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log(torch.exp(x) + 1) if not x.is_floating_point() else F.softplus(x)


def swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return x * torch.sigmoid(alpha * x)


def prelu(x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x < 0, x * slope, x)


def elu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.where(x > 0, x, alpha * (torch.exp(x) - 1))


def celu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.clamp(x, min=0) + torch.clamp(alpha * (torch.exp(x / alpha) - 1), max=0)


def selu(x: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    return gamma * torch.where(x > 0, x, alpha * torch.exp(x) - alpha)


def gelu(x: torch.Tensor, approximate: str = "none") -> torch.Tensor:
    return F.gelu(x, approximate=approximate)


@converter("LeakyRelu", since=(1, 6, 16))
def _leaky(node: Node, ctx: Context) -> Op:
    return Op(F.leaky_relu, (In(0), node.attr("alpha", 0.01)))


@converter("Elu", since=(1, 6, 22))
def _elu(node: Node, ctx: Context) -> Op:
    return Op(elu, (In(0), node.attr("alpha", 1.0)))


@converter("Celu", since=(12, 28))
def _celu(node: Node, ctx: Context) -> Op:
    return Op(celu, (In(0), node.attr("alpha", 1.0)))


@converter("Selu", since=(1, 6, 22))
def _selu(node: Node, ctx: Context) -> Op:
    return Op(selu, (In(0), node.attr("alpha", 1.67326319217681884765625),
                     node.attr("gamma", 1.05070102214813232421875)))


@converter("HardSigmoid", since=(1, 6, 22))
def _hard_sigmoid(node: Node, ctx: Context) -> Op:
    return Op(hard_sigmoid, (In(0), node.attr("alpha", 0.2), node.attr("beta", 0.5)))


@converter("HardSwish", since=(14, 22))
def _hard_swish(node: Node, ctx: Context) -> Op:
    return Op(hard_swish, (In(0),))


@converter("ThresholdedRelu", since=(10, 22))
def _thresholded(node: Node, ctx: Context) -> Op:
    return Op(thresholded_relu, (In(0), node.attr("alpha", 1.0)))


@converter("Shrink", since=(9,))
def _shrink(node: Node, ctx: Context) -> Op:
    return Op(shrink, (In(0), node.attr("bias", 0.0), node.attr("lambd", 0.5)))


@converter("Softplus", since=(1, 22))
def _softplus(node: Node, ctx: Context) -> Op:
    return Op(softplus, (In(0),))


@converter("Swish", since=(24,))
def _swish(node: Node, ctx: Context) -> Op:
    return Op(swish, (In(0), node.attr("alpha", 1.0)))


@converter("PRelu", since=(1, 6, 7, 9, 16))
def _prelu(node: Node, ctx: Context) -> Op:
    return Op(prelu, (In(0), In(1)))


@converter("Gelu", since=(20,))
def _gelu(node: Node, ctx: Context) -> Op:
    return Op(gelu, (In(0),), {"approximate": node.attr("approximate", "none")})
