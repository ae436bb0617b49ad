"""Quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear and the integer /
quantized-linear kernels (MatMulInteger, ConvInteger, QLinearMatMul, QLinearConv).

Scales and zero points are per tensor (one value), per axis (1-D along ``axis``) or blocked
(same rank as ``x``, ``ceil(D / block_size)`` along ``axis``). Rounding is half to even
(``torch.round``). Integer products run in float64, which is exact for 8/16-bit operands and
works on every device (CPU and CUDA have no integer conv).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from porter.converters.context import Context, In, Node, Op
from porter.converters.ops.elementwise import onnx_dtype
from porter.converters.registry import converter


def expand_quant_param(v: torch.Tensor, x: torch.Tensor, axis: int = 1,
                       block_size: int = 0) -> torch.Tensor:
    """A scale or zero point made broadcastable to ``x`` (per tensor, per axis or blocked)."""
    if v.numel() == 1:
        return v.reshape(())
    axis = axis % x.dim()
    if block_size:
        return v.repeat_interleave(block_size, dim=axis).narrow(axis, 0, x.shape[axis])
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def int_range(dtype: torch.dtype) -> tuple[int, int]:
    """The saturation range of an integer dtype."""
    info = torch.iinfo(dtype)
    return int(info.min), int(info.max)


def to_float8(x: torch.Tensor, dtype: torch.dtype, saturate: int = 1) -> torch.Tensor:
    """Round to a float8 type; out of range saturates, or (``saturate=0``) becomes inf / NaN."""
    fmax = torch.finfo(dtype).max
    if saturate:
        return torch.clamp(x, -fmax, fmax).to(dtype)
    if dtype == torch.float8_e4m3fn:  # torch saturates this one; past max + ulp/2 is NaN
        x = torch.where(x.abs() > fmax + 16.0, torch.full_like(x, math.nan), x)
    return x.to(dtype)


def quantize_linear(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None = None,
                    axis: int = 1, block_size: int = 0, dtype: torch.dtype = torch.uint8,
                    saturate: int = 1, precision: torch.dtype | None = None) -> torch.Tensor:
    """ONNX QuantizeLinear: ``saturate(round(x / scale) + zero_point)``, typed as the zero point."""
    if zero_point is not None:
        dtype = zero_point.dtype
    work = precision or torch.promote_types(x.dtype, scale.dtype)
    scale = expand_quant_param(scale, x, axis, block_size)
    y = x.to(work) / scale.to(work)
    if dtype.is_floating_point:
        return to_float8(y, dtype, saturate)
    y = torch.round(y)
    if zero_point is not None:
        y = y + expand_quant_param(zero_point, x, axis, block_size).to(y.dtype)
    lo, hi = int_range(dtype)
    return torch.clamp(y, lo, hi).to(dtype)


def dequantize_linear(x: torch.Tensor, scale: torch.Tensor,
                      zero_point: torch.Tensor | None = None, axis: int = 1, block_size: int = 0,
                      dtype: torch.dtype | None = None) -> torch.Tensor:
    """ONNX DequantizeLinear: ``(x - zero_point) * scale``, typed as ``dtype`` or the scale."""
    work = torch.promote_types(torch.float32, scale.dtype)
    y = x.to(work)
    if zero_point is not None and not zero_point.dtype.is_floating_point:
        y = y - expand_quant_param(zero_point, x, axis, block_size).to(work)
    y = y * expand_quant_param(scale, x, axis, block_size).to(work)
    return y.to(dtype or scale.dtype)


def _quant_dtype(node: Node, ctx: Context) -> torch.dtype:
    """The output type of QuantizeLinear: the zero point's, else ``output_dtype``, else uint8."""
    if ctx.has(2) and ctx.elem_type(2):
        return onnx_dtype(ctx.elem_type(2))
    return onnx_dtype(node.attr("output_dtype", 0) or 2)


@converter("QuantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28))
def _quantize_linear(node: Node, ctx: Context) -> Op:
    precision = node.attr("precision", 0)
    return Op(quantize_linear, (In(0), In(1), In(2) if ctx.has(2) else None),
              {"axis": node.attr("axis", 1), "block_size": node.attr("block_size", 0),
               "dtype": _quant_dtype(node, ctx), "saturate": node.attr("saturate", 1),
               "precision": onnx_dtype(precision) if precision else None})


@converter("DequantizeLinear", since=(10, 13, 19, 21, 23, 24, 25, 28))
def _dequantize_linear(node: Node, ctx: Context) -> Op:
    out = node.attr("output_dtype", 0)
    return Op(dequantize_linear, (In(0), In(1), In(2) if ctx.has(2) else None),
              {"axis": node.attr("axis", 1), "block_size": node.attr("block_size", 0),
               "dtype": onnx_dtype(out) if out else None})


def dynamic_quantize_linear(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ONNX DynamicQuantizeLinear: uint8 over the data range widened to include 0."""
    xf = x.to(torch.float32)
    hi = torch.clamp(xf.max(), min=0.0)
    lo = torch.clamp(xf.min(), max=0.0)
    span = torch.where(hi == lo, torch.ones_like(hi), hi - lo)
    scale = span / 255.0
    zp = torch.round(torch.clamp(-lo / scale, 0.0, 255.0))
    y = torch.clamp(torch.round(xf / scale) + zp, 0.0, 255.0)
    return y.to(torch.uint8), scale.to(x.dtype), zp.to(torch.uint8)


@converter("DynamicQuantizeLinear", since=(11,))
def _dynamic_quantize_linear(node: Node, ctx: Context) -> Op:
    return Op(dynamic_quantize_linear, (In(0),), n_out=3)


def _centered(x: torch.Tensor, zero_point: torch.Tensor | None,
              per_row: bool = False) -> torch.Tensor:
    """``x - zero_point`` in float64; a 1-D zero point runs along rows or (default) columns."""
    y = x.to(torch.float64)
    if zero_point is None:
        return y
    zp = zero_point.to(torch.float64)
    if per_row and zp.numel() > 1:
        zp = zp.reshape(-1, 1)
    return y - zp


def matmul_integer(a: torch.Tensor, b: torch.Tensor, a_zero_point: torch.Tensor | None = None,
                   b_zero_point: torch.Tensor | None = None) -> torch.Tensor:
    """ONNX MatMulInteger: int32 ``(a - a_zp) @ (b - b_zp)``; a 1-D a_zp is per row."""
    y = torch.matmul(_centered(a, a_zero_point, per_row=True), _centered(b, b_zero_point))
    return y.to(torch.int32)


@converter("MatMulInteger", since=(10,))
def _matmul_integer(node: Node, ctx: Context) -> Op:
    return Op(matmul_integer, tuple(In(i) if ctx.has(i) else None for i in range(4)))


def _conv_weight_zp(w: torch.Tensor, zero_point: torch.Tensor | None) -> torch.Tensor:
    """``w - w_zp`` in float64; a 1-D zero point is per output channel."""
    y = w.to(torch.float64)
    if zero_point is None:
        return y
    zp = zero_point.to(torch.float64)
    if zp.numel() > 1:
        zp = zp.reshape((-1,) + (1,) * (w.dim() - 1))
    return y - zp


def int_conv(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, strides=None,
             pads=None, dilations=None, group: int = 1,
             auto_pad: str = "NOTSET") -> torch.Tensor:
    """N-d convolution of float64 operands with ONNX padding (asymmetric and auto_pad)."""
    nd = w.dim() - 2
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    pads = list(pads or [0] * (2 * nd))
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(x.shape[2:], w.shape[2:], strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            begin.append(big if auto_pad == "SAME_LOWER" else small)
            end.append(small if auto_pad == "SAME_LOWER" else big)
        pads = begin + end
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    spec = []
    for i in reversed(range(nd)):
        spec += [pads[i], pads[i + nd]]
    x = F.pad(x, spec)
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return fn(x, w, bias, strides, 0, dilations, group)


def conv_integer(x: torch.Tensor, w: torch.Tensor, x_zero_point: torch.Tensor | None = None,
                 w_zero_point: torch.Tensor | None = None, strides=None, pads=None,
                 dilations=None, group: int = 1, auto_pad: str = "NOTSET") -> torch.Tensor:
    """ONNX ConvInteger: int32 convolution of the zero-point-centred operands."""
    xc = _centered(x, x_zero_point)
    y = int_conv(xc, _conv_weight_zp(w, w_zero_point), None, strides, pads, dilations, group,
             auto_pad)
    return y.round().to(torch.int32)


def _conv_kwargs(node: Node) -> dict:
    kw = {"strides": node.attr("strides"), "pads": node.attr("pads"),
          "dilations": node.attr("dilations"), "group": node.attr("group", 1),
          "auto_pad": node.attr("auto_pad", "NOTSET")}
    return {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}


@converter("ConvInteger", since=(10,))
def _conv_integer(node: Node, ctx: Context) -> Op:
    return Op(conv_integer, tuple(In(i) if ctx.has(i) else None for i in range(4)),
              _conv_kwargs(node))


def requantize(acc: torch.Tensor, multiplier: torch.Tensor, zero_point: torch.Tensor | None,
               dtype: torch.dtype) -> torch.Tensor:
    """``saturate(round(acc * multiplier) + zero_point)`` as ``dtype``."""
    y = torch.round(acc * multiplier.to(torch.float64))
    if zero_point is not None:
        y = y + zero_point.to(torch.float64)
    lo, hi = int_range(dtype)
    return torch.clamp(y, lo, hi).to(dtype)


def qlinear_matmul(a: torch.Tensor, a_scale: torch.Tensor, a_zero_point: torch.Tensor,
                   b: torch.Tensor, b_scale: torch.Tensor, b_zero_point: torch.Tensor,
                   y_scale: torch.Tensor, y_zero_point: torch.Tensor) -> torch.Tensor:
    """ONNX QLinearMatMul; 1-D a parameters are per row, 1-D b / y parameters per column."""
    acc = torch.matmul(_centered(a, a_zero_point, per_row=True), _centered(b, b_zero_point))
    if a_scale.numel() > 1:
        a_scale = a_scale.reshape(-1, 1)
    multiplier = a_scale * b_scale / y_scale
    dtype = y_zero_point.dtype if y_zero_point is not None else a.dtype
    return requantize(acc, multiplier, y_zero_point, dtype)


@converter("QLinearMatMul", since=(10, 21))
def _qlinear_matmul(node: Node, ctx: Context) -> Op:
    return Op(qlinear_matmul, tuple(In(i) if ctx.has(i) else None for i in range(8)))


def qlinear_conv(x: torch.Tensor, x_scale: torch.Tensor, x_zero_point: torch.Tensor,
                 w: torch.Tensor, w_scale: torch.Tensor, w_zero_point: torch.Tensor,
                 y_scale: torch.Tensor, y_zero_point: torch.Tensor,
                 bias: torch.Tensor | None = None, strides=None, pads=None, dilations=None,
                 group: int = 1, auto_pad: str = "NOTSET") -> torch.Tensor:
    """ONNX QLinearConv: integer conv (+ int32 bias), rescaled per tensor or output channel."""
    acc = int_conv(_centered(x, x_zero_point), _conv_weight_zp(w, w_zero_point),
               None if bias is None else bias.to(torch.float64), strides, pads, dilations,
               group, auto_pad)
    if w_scale.numel() > 1:
        w_scale = w_scale.reshape((1, -1) + (1,) * (acc.dim() - 2))
    multiplier = x_scale * w_scale / y_scale
    dtype = y_zero_point.dtype if y_zero_point is not None else x.dtype
    return requantize(acc, multiplier, y_zero_point, dtype)


@converter("QLinearConv", since=(10,))
def _qlinear_conv(node: Node, ctx: Context) -> Op:
    return Op(qlinear_conv, tuple(In(i) if ctx.has(i) else None for i in range(9)),
              _conv_kwargs(node))
