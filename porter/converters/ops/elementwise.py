"""Element-wise ops: unary math, activations, binary arithmetic and logic, Cast, Clip, Where."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter

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
    "Not": (torch.logical_not, (1,)),
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


# ---- uint16/32/64: torch lacks most CPU kernels, so compute on int64 bit patterns ---------------

def _is_wide_uint(x: torch.Tensor) -> bool:
    return x.dtype in (torch.uint16, torch.uint32, torch.uint64)


def _u_bits(x: torch.Tensor) -> torch.Tensor:
    """An unsigned tensor as int64 holding the same value modulo 2**64."""
    return x.view(torch.int64) if x.dtype == torch.uint64 else x.to(torch.int64)


def _u_wrap(r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int64 bits back to the unsigned ``dtype``, wrapping modulo its width."""
    return r.view(torch.uint64) if dtype == torch.uint64 else r.to(dtype)


def _u_key(x: torch.Tensor) -> torch.Tensor:
    """int64 with the same ordering as the unsigned 64-bit value whose bits ``x`` holds."""
    return x ^ torch.iinfo(torch.int64).min


def _u_order(x: torch.Tensor) -> torch.Tensor:
    """An order-preserving int64 image of an unsigned tensor."""
    return _u_key(x.view(torch.int64)) if x.dtype == torch.uint64 else x.to(torch.int64)


def _u_divmod(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype):
    """Unsigned quotient and remainder of int64 bit patterns (Hacker's Delight divu for uint64)."""
    if dtype != torch.uint64:
        q = torch.div(a, b, rounding_mode="floor")
        return q, a - q * b
    a, b = torch.broadcast_tensors(a, b)
    big = b < 0  # divisor >= 2**63: the quotient is 0 or 1
    bs = torch.where(big, torch.ones_like(b), b)
    q = torch.div((a >> 1) & torch.iinfo(torch.int64).max, bs, rounding_mode="floor") << 1
    q = q + (_u_key(a - q * bs) >= _u_key(bs)).to(torch.int64)
    q = torch.where(big, (_u_key(a) >= _u_key(b)).to(torch.int64), q)
    return q, a - q * b


def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if _is_wide_uint(a):
        return _u_wrap(_u_bits(a) + _u_bits(b), a.dtype)
    return a + b


def sub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if _is_wide_uint(a):
        return _u_wrap(_u_bits(a) - _u_bits(b), a.dtype)
    return a - b


def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if _is_wide_uint(a):
        return _u_wrap(_u_bits(a) * _u_bits(b), a.dtype)
    return a * b


def div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Div: integer division truncates toward zero."""
    if a.is_floating_point() or a.is_complex():
        return a / b
    if _is_wide_uint(a):
        return _u_wrap(_u_divmod(_u_bits(a), _u_bits(b), a.dtype)[0], a.dtype)
    return torch.div(a, b, rounding_mode="trunc")


def mod(a: torch.Tensor, b: torch.Tensor, fmod: int = 0) -> torch.Tensor:
    """ONNX Mod: the result takes the divisor's sign unless ``fmod`` (C fmod)."""
    if _is_wide_uint(a):  # no signs: both definitions agree
        return _u_wrap(_u_divmod(_u_bits(a), _u_bits(b), a.dtype)[1], a.dtype)
    if fmod or a.is_floating_point():
        return torch.fmod(a, b) if fmod else torch.remainder(a, b)
    return torch.remainder(a, b)


def compare(a: torch.Tensor, b: torch.Tensor, op: str) -> torch.Tensor:
    """Greater / Less / GreaterOrEqual / LessOrEqual / Equal, unsigned types included."""
    if _is_wide_uint(a):
        a, b = _u_order(a), _u_order(b)
    if op == "gt":
        return a > b
    if op == "lt":
        return a < b
    if op == "ge":
        return a >= b
    if op == "le":
        return a <= b
    return a == b


def bitwise_not(x: torch.Tensor) -> torch.Tensor:
    if _is_wide_uint(x):
        return _u_wrap(~_u_bits(x), x.dtype)
    return torch.bitwise_not(x)


@converter("BitwiseNot", since=(18,))
def _bitwise_not(node: Node, ctx: Context) -> Op:
    if ctx.elem_type(0) in _NATIVE_TYPES:
        return Op(torch.bitwise_not, (In(0),))
    return Op(bitwise_not, (In(0),))


def pow_(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ONNX Pow: the result has the base's type."""
    return torch.pow(a, b).to(a.dtype)


def bit_shift(x: torch.Tensor, y: torch.Tensor, left: bool) -> torch.Tensor:
    """ONNX BitShift; wide unsigned types shift their int64 bits (logically, to the right)."""
    if _is_wide_uint(x):
        v, s = _u_bits(x), _u_bits(y)
        if left:
            return _u_wrap(v << s, x.dtype)
        low = ~((torch.full_like(v, -1) << (63 - s)) << 1)  # the 64 - s low bits
        return _u_wrap((v >> s) & low, x.dtype)
    return x << y if left else x >> y


_BINARY = {  # op: (fn for torch-native types, general fn or compare key, since, template, key)
    "Add": (torch.add, add, (1, 6, 7, 13, 14), "{0} + {1}"),
    "Sub": (torch.sub, sub, (1, 6, 7, 13, 14), "{0} - {1}"),
    "Mul": (torch.mul, mul, (1, 6, 7, 13, 14), "{0} * {1}"),
    "Div": (div, div, (1, 6, 7, 13, 14), None),
    "Pow": (pow_, pow_, (1, 7, 12, 13, 15), None),
    "And": (torch.logical_and, None, (1, 7), None), "Or": (torch.logical_or, None, (1, 7), None),
    "Xor": (torch.logical_xor, None, (1, 7), None),
    "Equal": (torch.eq, None, (1, 7, 11, 13, 19), None),
    "Less": (torch.lt, "lt", (1, 7, 9, 13), None),
    "Greater": (torch.gt, "gt", (1, 7, 9, 13), None),
    "LessOrEqual": (torch.le, "le", (12, 16), None),
    "GreaterOrEqual": (torch.ge, "ge", (12, 16), None),
    "BitwiseAnd": (torch.bitwise_and, None, (18,), None),
    "BitwiseOr": (torch.bitwise_or, None, (18,), None),
    "BitwiseXor": (torch.bitwise_xor, None, (18,), None),
}
_NATIVE_TYPES = {1, 2, 3, 5, 6, 7, 9, 10, 11, 14, 15, 16}  # ONNX types torch's CPU kernels cover


def binary(a: torch.Tensor, b: torch.Tensor, op: str) -> torch.Tensor:
    """An element-wise binary op by ONNX name (the form opset < 7 broadcasting goes through)."""
    if op == "Add":
        return add(a, b)
    if op == "Sub":
        return sub(a, b)
    if op == "Mul":
        return mul(a, b)
    if op == "Div":
        return div(a, b)
    if op == "Pow":
        return pow_(a, b)
    if op == "And":
        return torch.logical_and(a, b)
    if op == "Or":
        return torch.logical_or(a, b)
    if op == "Xor":
        return torch.logical_xor(a, b)
    return compare(a, b, {"Equal": "eq", "Less": "lt", "Greater": "gt"}[op])


def legacy_broadcast(a: torch.Tensor, b: torch.Tensor, axis: int, op: str) -> torch.Tensor:
    """Opset < 7 ``broadcast=1, axis``: ``b`` lines up with ``a``'s dims from ``axis``."""
    axis = axis % a.dim()
    b = b.reshape(tuple(b.shape) + (1,) * (a.dim() - axis - b.dim()))
    return binary(a, b, op)


def _binary(fn, general, template):
    """``fn`` when the input type is known to be native to torch, else the general form."""

    def convert(node: Node, ctx: Context) -> Op:
        if node.opset < 7 and node.attr("broadcast", 0) and node.attr("axis") is not None:
            return Op(legacy_broadcast, (In(0), In(1)), {"axis": node.attr("axis"),
                                                         "op": node.op_type})
        if general is None or ctx.elem_type(0) in _NATIVE_TYPES:
            return Op(fn, (In(0), In(1)), template=template)
        if isinstance(general, str):
            return Op(compare, (In(0), In(1)), {"op": general})
        return Op(general, (In(0), In(1)))

    return convert


for _name, (_fn, _general, _since, _tpl) in _BINARY.items():
    converter(_name, since=_since)(_binary(_fn, _general, _tpl))


@converter("Mod", since=(10, 13, 28))
def _mod(node: Node, ctx: Context) -> Op:
    return Op(mod, (In(0), In(1)), {"fmod": node.attr("fmod", 0)})


@converter("BitShift", since=(11, 28))
def _bitshift(node: Node, ctx: Context) -> Op:
    return Op(bit_shift, (In(0), In(1)), {"left": node.attr("direction") == "LEFT"})


def variadic(op: str, *xs: torch.Tensor) -> torch.Tensor:
    """Max / Min / Sum / Mean over any number of broadcast inputs."""
    dtype = xs[0].dtype
    wide = _is_wide_uint(xs[0])
    if wide:  # order-preserving int64 images for max/min, wrapping bits for sum
        xs = tuple(_u_order(x) if op in ("max", "min") else _u_bits(x) for x in xs)
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
    if wide:
        if op in ("max", "min") and dtype == torch.uint64:
            out = _u_key(out)
        out = _u_wrap(out, dtype)
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


def cast(x: torch.Tensor, dtype: torch.dtype, saturate: int = 1) -> torch.Tensor:
    """ONNX Cast; float8 targets saturate to the type's finite range unless ``saturate`` is 0.

    Without saturation an out-of-range value becomes NaN, or +-inf for float8e5m2 (the only
    float8 type with infinities).
    """
    f8 = (torch.float8_e4m3fn, torch.float8_e4m3fnuz, torch.float8_e5m2, torch.float8_e5m2fnuz)
    if dtype in f8:
        if not x.is_floating_point():
            x = x.to(torch.float32)
        fmax = torch.finfo(dtype).max
        if saturate:
            return torch.clamp(x, -fmax, fmax).to(dtype)
        if dtype == torch.float8_e4m3fn:
            # torch saturates this one; past max + ulp/2 (464) round-to-nearest overflows
            over = x.abs() > fmax + 16.0
            return torch.where(over, torch.full_like(x, math.nan), x).to(dtype)
        return x.to(dtype)
    if x.dtype.is_floating_point and not dtype.is_floating_point and dtype != torch.bool:
        x = torch.trunc(x)
        if dtype in (torch.uint8, torch.uint16, torch.uint32, torch.uint64):
            x = torch.clamp(x, min=0) if x.dtype != torch.float64 else x
    return x.to(dtype)


def _to_attr(to) -> int:
    if isinstance(to, str):  # opset < 6 names the type
        from onnx import TensorProto

        return getattr(TensorProto, to.upper())
    return int(to)


@converter("Cast", since=(1, 6, 9, 13, 19, 21, 23, 24, 25, 28))
def _cast(node: Node, ctx: Context) -> Op:
    return Op(cast, (In(0),), {"dtype": onnx_dtype(_to_attr(node.attr("to"))),
                               "saturate": node.attr("saturate", 1)})


def cast_like(x: torch.Tensor, like: torch.Tensor, saturate: int = 1) -> torch.Tensor:
    return cast(x, like.dtype, saturate)


@converter("CastLike", since=(15, 19, 21, 23, 24, 25))
def _cast_like(node: Node, ctx: Context) -> Op:
    return Op(cast_like, (In(0), In(1)), {"saturate": node.attr("saturate", 1)})


def bit_cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ONNX BitCast: the same bits read as ``dtype`` (same element width)."""
    return x.view(dtype)


@converter("BitCast", since=(26,))
def _bit_cast(node: Node, ctx: Context) -> Op:
    return Op(bit_cast, (In(0),), {"dtype": onnx_dtype(_to_attr(node.attr("to")))})


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
    """x if x > 0 else alpha * (exp(x) - 1); half types are computed in float32. F.elu (not
    expm1, which TorchScript's ONNX exporter has no symbolic for) so the module exports."""
    y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return F.elu(y, alpha).to(x.dtype)


def celu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)); half types are computed in float32
    (F.celu: exportable, unlike expm1)."""
    y = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return F.celu(y, alpha).to(x.dtype)


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
