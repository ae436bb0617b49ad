"""conv2d, depthwise_conv2d, conv2d_transpose (legacy and PIR).

Paddle's ``paddings`` is ``[ph, pw]`` or ``[top, bottom, left, right]``; ``padding_algorithm``
``SAME`` pads by the input size at run time (TensorFlow's rule), ``VALID`` not at all. Filters
are OIHW for convolutions and [in, out/groups, kh, kw] for transposed ones, as in torch, so the
weights are taken verbatim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.registry import paddle_op


def conv2d_padded(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  stride: list, pads: list, dilation: list, groups: int) -> torch.Tensor:
    """Convolution with asymmetric explicit padding ``[top, bottom, left, right]``."""
    x = F.pad(x, [pads[2], pads[3], pads[0], pads[1]])
    return F.conv2d(x, weight, bias, stride, 0, dilation, groups)


def conv2d_same(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: list,
                dilation: list, groups: int) -> torch.Tensor:
    """Convolution with Paddle's ``SAME`` padding: output = ceil(input / stride)."""
    pads = []
    for i in (0, 1):
        size, k = x.shape[2 + i], (weight.shape[2 + i] - 1) * dilation[i] + 1
        total = max((-(-size // stride[i]) - 1) * stride[i] + k - size, 0)
        pads += [total // 2, total - total // 2]
    x = F.pad(x, [pads[2], pads[3], pads[0], pads[1]])
    return F.conv2d(x, weight, bias, stride, 0, dilation, groups)


def conv2d_nhwc(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: list, pads: list, dilation: list, groups: int) -> torch.Tensor:
    """An NHWC convolution (filters still OIHW, as Paddle keeps them)."""
    x = F.pad(x.permute(0, 3, 1, 2), [pads[2], pads[3], pads[0], pads[1]])
    return F.conv2d(x, weight, bias, stride, 0, dilation, groups).permute(0, 2, 3, 1)


def pads4(op: PaddleOp, pads: list | None, k: tuple[int, int] | None = None) -> list[int]:
    """Paddle paddings as ``[top, bottom, left, right]`` (VALID -> zeros)."""
    if str(op.attr("padding_algorithm", "EXPLICIT")).upper() == "VALID":
        return [0, 0, 0, 0]
    pads = list(pads or [0, 0])
    if len(pads) == 2:
        return [pads[0], pads[0], pads[1], pads[1]]
    if len(pads) == 4:
        return pads
    if len(pads) == 8:  # per-dimension [N0, N1, C0, C1, H0, H1, W0, W1]
        return pads[4:]
    raise Unsupported(f"{op.type} paddings {pads}")


def _weights(op: PaddleOp, ctx: Context, i_w: int, i_b: int | None):
    w = ctx.const(i_w)
    b = ctx.const(i_b) if i_b is not None and ctx.has(i_b) else None
    if w is None or (i_b is not None and ctx.has(i_b) and b is None):
        return None, None
    return w, b


@paddle_op("conv2d", "depthwise_conv2d", inputs=("Input", "Filter", "Bias"),
           outputs=("Output",), names=("input", "weight", "bias"))
@paddle_op("pd_op.conv2d", "pd_op.depthwise_conv2d", names=("input", "weight"))
def _conv2d(op: PaddleOp, ctx: Context) -> Op:
    stride = list(op.attr("strides", [1, 1]))
    dilation = list(op.attr("dilations", [1, 1]))
    groups = int(op.attr("groups", 1) or 1)
    fmt = str(op.attr("data_format", "NCHW")).upper()
    algo = str(op.attr("padding_algorithm", "EXPLICIT")).upper()
    bias = In(2) if ctx.has(2) else None
    if fmt in ("NHWC",):
        if algo == "SAME":
            raise Unsupported("NHWC conv2d with SAME padding")
        return Op(conv2d_nhwc, (In(0), In(1), bias, stride, pads4(op, op.attr("paddings")),
                                dilation, groups))
    if algo == "SAME":
        return Op(conv2d_same, (In(0), In(1), bias, stride, dilation, groups))
    pads = pads4(op, op.attr("paddings"))
    w, b = _weights(op, ctx, 1, 2 if ctx.has(2) else None)
    if pads[0] == pads[1] and pads[2] == pads[3] and w is not None and w.dim() == 4:
        conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), tuple(stride),
                         (pads[0], pads[2]), tuple(dilation), groups, bias=b is not None)
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b.reshape(-1))
        return Op(conv, (In(0),))
    return Op(conv2d_padded, (In(0), In(1), bias, stride, pads, dilation, groups))


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: list, pads: list, output_padding: list, dilation: list, groups: int,
                     output_size: list) -> torch.Tensor:
    """Transposed convolution with Paddle's paddings ``[top, bottom, left, right]``; an
    ``output_size`` fixes the size, as Paddle does, through the output padding."""
    output_size = [int(v) for v in output_size] if len(output_size) else []
    y = F.conv_transpose2d(x, weight, None, stride, 0, output_padding or 0, groups, dilation)
    h, w = y.shape[2] - pads[0] - pads[1], y.shape[3] - pads[2] - pads[3]
    if output_size:
        extra_h, extra_w = output_size[0] - h, output_size[1] - w
        y = F.pad(y, [0, max(extra_w, 0), 0, max(extra_h, 0)])
        h, w = output_size[0], output_size[1]
    y = y[:, :, pads[0]:pads[0] + h, pads[2]:pads[2] + w]
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


@paddle_op("conv2d_transpose", "depthwise_conv2d_transpose", inputs=("Input", "Filter", "Bias"),
           outputs=("Output",), names=("input", "weight", "bias"))
def _conv2d_transpose_legacy(op: PaddleOp, ctx: Context) -> Op:
    size = op.attr("output_size", []) or []  # ints, or In: variables named by a VARS attr
    return _transpose(op, ctx, size if isinstance(size, In) else list(size), 2)


@paddle_op("pd_op.conv2d_transpose", "pd_op.depthwise_conv2d_transpose",
           names=("input", "weight", "output_size"))
def _conv2d_transpose_pir(op: PaddleOp, ctx: Context) -> Op:
    size = ctx.int_list(2, None, [])
    return _transpose(op, ctx, size if isinstance(size, In) else list(size or []), None)


def _transpose(op: PaddleOp, ctx: Context, output_size: list, i_bias: int | None) -> Op:
    if str(op.attr("data_format", "NCHW")).upper() != "NCHW":
        raise Unsupported(f"{op.type} with data_format {op.attr('data_format')}")
    if str(op.attr("padding_algorithm", "EXPLICIT")).upper() == "SAME":
        raise Unsupported(f"{op.type} with SAME padding")
    stride = list(op.attr("strides", [1, 1]))
    dilation = list(op.attr("dilations", [1, 1]))
    groups = int(op.attr("groups", 1) or 1)
    out_pad = list(op.attr("output_padding", []) or [])
    pads = pads4(op, op.attr("paddings"))
    has_bias = i_bias is not None and ctx.has(i_bias)
    w, b = _weights(op, ctx, 1, i_bias if has_bias else None)
    if (not output_size and pads[0] == pads[1] and pads[2] == pads[3] and w is not None
            and w.dim() == 4):
        conv = nn.ConvTranspose2d(w.shape[0], w.shape[1] * groups, tuple(w.shape[2:]),
                                  tuple(stride), (pads[0], pads[2]),
                                  tuple(out_pad) if out_pad else 0, groups,
                                  bias=b is not None, dilation=tuple(dilation))
        with torch.no_grad():
            conv.weight.copy_(w)
            if b is not None:
                conv.bias.copy_(b.reshape(-1))
        return Op(conv, (In(0),))
    return Op(conv_transpose2d, (In(0), In(1), In(i_bias) if has_bias else None, stride, pads,
                                 out_pad, dilation, groups, output_size))
