"""pool2d (max/avg; explicit, SAME or VALID padding; global; adaptive) and its PIR form.

torch's pooling pads symmetrically and at most half a window; Paddle allows any
``[top, bottom, left, right]``. Those cases pad explicitly (with -inf for max) and, for an
``exclusive`` average, divide by the count of real elements in each window.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.ops.conv import pads4
from porter.converters.paddle.registry import paddle_op


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=(2, 3), keepdim=True)


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    return x.amax(dim=(2, 3), keepdim=True)


def pool2d_padded(x: torch.Tensor, kind: str, ksize: list, strides: list, pads: list,
                  ceil_mode: bool, exclusive: bool) -> torch.Tensor:
    """Pooling with arbitrary explicit padding ``[top, bottom, left, right]``."""
    lrtb = [pads[2], pads[3], pads[0], pads[1]]
    if kind == "max":  # an all-padding window gives -FLT_MAX in Paddle, as the pad here
        xp = F.pad(x, lrtb, value=torch.finfo(x.dtype).min)
        return F.max_pool2d(xp, ksize, strides, 0, 1, ceil_mode)
    # divisor_override=1: window sums; Paddle divides by the real elements in the window
    # (exclusive) or by the window clipped to the padded input, as torch does
    total = F.avg_pool2d(F.pad(x, lrtb), ksize, strides, 0, ceil_mode, True, 1)
    ones = F.pad(torch.ones_like(x[:1, :1]), lrtb, value=0.0 if exclusive else 1.0)
    count = F.avg_pool2d(ones, ksize, strides, 0, ceil_mode, True, 1)
    return total / count


def pool2d_same(x: torch.Tensor, kind: str, ksize: list, strides: list, ceil_mode: bool,
                exclusive: bool) -> torch.Tensor:
    """Pooling with ``SAME`` padding (output = ceil(input / stride))."""
    pads = []
    for i in (0, 1):
        size = x.shape[2 + i]
        total = max((-(-size // strides[i]) - 1) * strides[i] + ksize[i] - size, 0)
        pads += [total // 2, total - total // 2]
    return pool2d_padded(x, kind, ksize, strides, pads, ceil_mode, exclusive)


def _pool(op: PaddleOp, ksize) -> Op:
    if str(op.attr("data_format", "NCHW")).upper() != "NCHW":
        raise Unsupported("pool2d in NHWC")
    kind = str(op.attr("pooling_type", "max"))
    if kind not in ("max", "avg"):
        raise Unsupported(f"pool2d pooling_type {kind!r}")
    if isinstance(ksize, In):
        raise Unsupported("pool2d with a computed kernel size")
    ksize = [int(k) for k in ksize]
    if len(ksize) == 1:
        ksize = ksize * 2
    if op.attr("global_pooling", False):
        return Op(global_max_pool if kind == "max" else global_avg_pool, (In(0),))
    if op.attr("adaptive", False):
        if ksize == [1, 1]:
            return Op(global_max_pool if kind == "max" else global_avg_pool, (In(0),))
        fn = F.adaptive_max_pool2d if kind == "max" else F.adaptive_avg_pool2d
        return Op(fn, (In(0), tuple(ksize)))
    strides = [int(s) for s in op.attr("strides", [1, 1])]
    ceil_mode = bool(op.attr("ceil_mode", False))
    exclusive = bool(op.attr("exclusive", True))
    algo = str(op.attr("padding_algorithm", "EXPLICIT")).upper()
    if algo == "SAME":
        return Op(pool2d_same, (In(0), kind, ksize, strides, ceil_mode, exclusive))
    pads = pads4(op, op.attr("paddings"))
    symmetric = (pads[0] == pads[1] and pads[2] == pads[3] and pads[0] * 2 <= ksize[0]
                 and pads[2] * 2 <= ksize[1])
    if symmetric and not (ceil_mode and any(pads) and kind == "max"):
        if kind == "max":
            return Op(F.max_pool2d, (In(0), tuple(ksize), tuple(strides), (pads[0], pads[2])),
                      {"ceil_mode": ceil_mode})
        return Op(F.avg_pool2d, (In(0), tuple(ksize), tuple(strides), (pads[0], pads[2])),
                  {"ceil_mode": ceil_mode, "count_include_pad": not exclusive})
    return Op(pool2d_padded, (In(0), kind, ksize, strides, pads, ceil_mode, exclusive))


@paddle_op("pool2d", inputs=("X",))
def _pool2d(op: PaddleOp, ctx: Context) -> Op:
    return _pool(op, op.attr("ksize", [1, 1]))


@paddle_op("pd_op.pool2d")
def _pool2d_pir(op: PaddleOp, ctx: Context) -> Op:
    return _pool(op, ctx.int_list(1, "kernel_size", [1, 1]))



