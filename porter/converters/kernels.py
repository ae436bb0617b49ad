"""Faster CPU kernels that a converted module's plan uses for inference.

Each kernel computes the same function as the op it stands in for (tests compare them) and may
decline a call by returning None, in which case the plan runs the op itself. They are used only
when :func:`porter.converters.reuse.inference_fast_paths` holds (no autograd, tracing or export), so
training, ``torch.export``, the NPU audit and generated source all see the plain torch op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ACTIVATIONS", "BilinearUpsample2x", "ConcatParts", "DeferredConcat",
           "PointwiseConvGemm", "SplitConv", "conv_parts", "instance_norm_channels_last",
           "is_channels_last", "onednn_conv", "plan_kernels", "pointwise_conv",
           "pointwise_conv_channels_last", "upsample_bilinear2x", "worth_splitting"]


class PointwiseConvGemm:
    """A 1x1 convolution (stride 1, no padding, one group) as one matrix product.

    torch sends these through im2col (one thread) or oneDNN (several), both of which copy or
    reorder the input first; a GEMM on the ``(C, H*W)`` view reads it in place. Measured on
    MODNet's 37 pointwise convolutions: 2.2x faster with two threads, on par with one.
    """

    def __init__(self, conv: nn.Module) -> None:
        self.conv = conv

    @staticmethod
    def applies(module: Any) -> bool:
        if not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return False
        nd = module.weight.dim() - 2
        return (module.groups == 1 and module.padding_mode == "zeros"
                and tuple(module.kernel_size) == (1,) * nd and tuple(module.stride) == (1,) * nd
                and tuple(module.dilation) == (1,) * nd and module.padding in ((0,) * nd, "valid"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        return pointwise_conv(x, self.conv.weight, self.conv.bias)


def pointwise_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor | None:
    """``conv(x, w, b)`` for a 1x1 kernel (stride 1, no padding, one group) as one GEMM.

    None when the call does not fit (not a dense CPU tensor of the weight's dtype and rank).
    """
    if (type(x) is not torch.Tensor or x.device.type != "cpu" or x.dtype != w.dtype
            or x.dim() != w.dim() or not x.is_contiguous() or not w.is_contiguous()
            or x.shape[1] != w.shape[1]):
        return None
    n, c = x.shape[:2]
    w2 = w.view(w.shape[0], c)
    if n == 1:
        flat = x.view(c, -1)
        y = torch.addmm(b.view(-1, 1), w2, flat) if b is not None else torch.mm(w2, flat)
    else:
        y = torch.matmul(w2, x.view(n, c, -1))
        if b is not None:
            y.add_(b.view(-1, 1))
    return y.view(n, w.shape[0], *x.shape[2:])


def is_channels_last(x: Any) -> bool:
    """A 4-D tensor whose channels are its innermost dimension in memory (channels-last, or a
    channel slice of such a tensor) while it is not plain row-major."""
    return (type(x) is torch.Tensor and x.dim() == 4 and x.shape[1] > 1 and x.stride(1) == 1
            and not x.is_contiguous())


#: activations oneDNN applies as a convolution's post-op: porter's name -> (attr, scalars), and
#: the in-place op that computes the same thing after an unfused convolution
ACTIVATIONS: dict[str, tuple[str, list[float], Callable[[torch.Tensor], torch.Tensor]]] = {
    "relu": ("relu", [], torch.relu_),
    "relu6": ("hardtanh", [0.0, 6.0], lambda t: F.hardtanh_(t, 0.0, 6.0)),
    "sigmoid": ("sigmoid", [], torch.sigmoid_),
}


def _onednn_conv_op() -> Callable | None:
    """oneDNN's convolution with a fused post-op (``mkldnn::_convolution_pointwise``, what
    inductor's CPU backend emits), if this torch build has it and it runs."""
    op = getattr(getattr(torch.ops, "mkldnn", None), "_convolution_pointwise", None)
    if op is None or not torch.backends.mkldnn.is_available():
        return None
    try:
        x = torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last)
        y = op(x, torch.ones(1, 2, 1, 1), None, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        return op if y.shape == (1, 1, 3, 3) and float(y[0, 0, 0, 0]) == 2.0 else None
    except Exception:  # noqa: BLE001 - a build without the op's kernel: plain convolutions
        return None


_ONEDNN_CONV: list[Callable | None] = []


def onednn_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: Any,
                padding: Any, dilation: Any, groups: int, activation: str | None = None
                ) -> torch.Tensor | None:
    """``activation(conv2d(x, w, b, ...))`` of a dense channels-last float32 CPU input, by
    oneDNN with the activation fused as a post-op (no second pass over the output); the
    result is channels-last. None to decline (another layout, string padding, no such op).

    For 1x1 convolutions this is also faster than porter's GEMM (oneDNN applies the bias and
    the activation while writing; the GEMM copies the bias in first): MODNet's 13 pointwise
    shapes 22.9 -> 16.7 ms at one thread, 12.2 -> 8.4 ms at two.
    """
    if not _ONEDNN_CONV:
        _ONEDNN_CONV.append(_onednn_conv_op())
    op = _ONEDNN_CONV[0]
    if (op is None or type(x) is not torch.Tensor or x.dim() != 4 or x.dtype != torch.float32
            or x.device.type != "cpu" or w.dtype != torch.float32 or isinstance(padding, str)
            or not x.is_contiguous(memory_format=torch.channels_last) or x.is_contiguous()
            or (b is not None and b.dtype != torch.float32)):
        return None
    attr, scalars, _ = ACTIVATIONS[activation] if activation else ("none", [], None)
    return op(x, w, b, list(padding), list(stride), list(dilation), groups, attr, scalars, "")


def pointwise_conv_channels_last(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
                                 ) -> torch.Tensor | None:
    """A 1x1 convolution (stride 1, no padding, one group) of a channels-last input as one GEMM
    over its ``(N*H*W, C)`` rows; the result is channels-last too. None to decline.

    torch routes 1x1 convolutions of channels-last inputs to its im2col kernel, several times
    slower than this product, which reads the input where it lies (a channel slice as well).
    """
    if (not is_channels_last(x) or x.device.type != "cpu" or x.dtype != w.dtype
            or w.dim() != 4 or x.shape[1] != w.shape[1] or not w.is_contiguous()):
        return None
    n, c, h, width = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * width, c)  # a view when the pixels are dense
    w2 = w.view(w.shape[0], c).t()
    y = torch.addmm(b, rows, w2) if b is not None else torch.mm(rows, w2)
    return y.view(n, h, width, w.shape[0]).permute(0, 3, 1, 2)


def instance_norm_channels_last(x: torch.Tensor, weight: torch.Tensor | None,
                                bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    """``F.group_norm(x, C, weight, bias, eps)`` (instance normalisation) of a channels-last
    tensor, with a channels-last result.

    torch's own channels-last group_norm and batch_norm kernels sum x and x² in float32 in one
    pass, which loses the variance to cancellation when the mean is large against the spread
    (1e-3 error at mean 10, std 2, where the row-major kernel stays at 1e-6); this computes the
    mean first and the variance of the centred values, as accurately as the row-major kernel.
    """
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w, c)
    mean = rows.mean(dim=1, keepdim=True)
    centred = rows - mean
    var = centred.square().mean(dim=1, keepdim=True)
    scale = (var + eps).rsqrt_()
    if weight is not None:
        scale = scale * weight
    y = centred.mul_(scale)
    if bias is not None:
        y = y.add_(bias)
    return y.view(n, h, w, c).permute(0, 3, 1, 2)


class BilinearUpsample2x:
    """Bilinear upsampling by exactly 2 (half-pixel centres) as two separable passes of lerps.

    Each output row (then column) is ``lerp(x[i], x[i -/+ 1], 0.25)`` with the edges repeated,
    which is what half-pixel sampling at scale 2 reduces to. aten's NCHW bilinear kernel walks
    pixels one channel plane at a time; this form is vectorised over whole rows. Measured on
    MODNet's decoder, one thread: 8.3x faster on 1280x16x16, 1.5x on 32x128x128.
    """

    MIN_NUMEL = 1 << 14  # below this the fixed cost of five ops outweighs the saving

    @staticmethod
    def applies(fn: Callable, args: tuple, kwargs: dict) -> bool:
        from porter.converters.ops.resize import interpolate

        return (fn is interpolate and len(args) == 2 and not args[1][0]
                and tuple(args[1][1]) == (2.0, 2.0) and kwargs.get("mode") == "bilinear"
                and kwargs.get("align_corners") is False)  # half-pixel, either flavour

    def __call__(self, x: torch.Tensor, scales: Any) -> torch.Tensor | None:
        return upsample_bilinear2x(x)


def upsample_bilinear2x(x: torch.Tensor) -> torch.Tensor | None:
    """Half-pixel bilinear x2 of a 4-D CPU float tensor by separable lerps; None to decline."""
    if (type(x) is not torch.Tensor or x.device.type != "cpu" or x.dim() != 4
            or not x.is_floating_point() or x.numel() < BilinearUpsample2x.MIN_NUMEL):
        return None
    n, c, h, w = x.shape
    cols = torch.empty((n, c, h, w, 2), dtype=x.dtype)
    _upsample_last(x, cols, -1)
    rows = cols.view(n, c, h, 2 * w)
    out = torch.empty((n, c, h, 2, 2 * w), dtype=x.dtype)
    _upsample_last(rows, out, 2)
    return out.view(n, c, 2 * h, 2 * w)


def _upsample_last(x: torch.Tensor, out: torch.Tensor, dim: int) -> None:
    """Write the two interleaved halves of a x2 half-pixel upsampling of ``x`` along ``dim``.

    ``out`` has a new axis of size 2 right after ``dim`` (at the end when dim is -1).
    """
    def sl(t: torch.Tensor, a: int | slice, b: int | None = None) -> torch.Tensor:
        idx: list[Any] = [slice(None)] * t.dim()
        pos = dim if dim >= 0 else x.dim() + dim
        idx[pos] = a
        if b is not None:
            idx[pos + 1] = b
        return t[tuple(idx)]

    torch.lerp(sl(x, slice(1, None)), sl(x, slice(None, -1)), 0.25, out=sl(out, slice(1, None), 0))
    sl(out, 0, 0).copy_(sl(x, 0))
    torch.lerp(sl(x, slice(None, -1)), sl(x, slice(1, None)), 0.25,
               out=sl(out, slice(None, -1), 1))
    sl(out, -1, 1).copy_(sl(x, -1))


class ConcatParts(tuple):
    """The inputs of a channel concatenation whose only reader is a convolution."""


class DeferredConcat:
    """Hand a channel concatenation's parts to the convolution that reads it, uncopied.

    A convolution is linear in its input channels, so ``conv(cat(a, b), W)`` is
    ``conv(a, W[:, :ca]) + conv(b, W[:, ca:])``: the concatenated tensor (MODNet's largest,
    35x512x512) is never written, and an odd channel count (32 + 3 image channels) no longer
    drags the whole convolution onto oneDNN's slow path. Measured on that layer, one thread:
    44 ms -> 31 ms with freed memory kept, 84 ms -> 62 ms without. When every part's channel
    count is a multiple of 8 the summing pass costs what the copy saved, so those stay a cat.
    """

    def __call__(self, axis: int, *xs: Any) -> ConcatParts | None:
        if axis not in (1, -3) or not worth_splitting(xs):
            return None
        return ConcatParts(xs)


def worth_splitting(xs: Any) -> bool:
    """Whether convolving these channel-concatenation parts apart beats concatenating them:
    at least two 4-D CPU float tensors, not all with a channel count that is a multiple of 8."""
    return len(xs) >= 2 and all(
        type(x) is torch.Tensor and x.device.type == "cpu" and x.dim() == 4
        and x.is_floating_point() for x in xs) and not all(x.shape[1] % 8 == 0 for x in xs)


class SplitConv:
    """The convolution behind a :class:`DeferredConcat`: one convolution per part, summed.

    A plain tensor input (the concatenation declined) goes to ``inner`` or back to the op.
    """

    def __init__(self, conv: nn.Conv2d, inner: Callable | None) -> None:
        self.conv, self.inner = conv, inner

    def __call__(self, x: Any) -> torch.Tensor | None:
        if not isinstance(x, ConcatParts):
            return self.inner(x) if self.inner is not None else None
        conv = self.conv
        out = conv_parts(x, conv.weight, conv.bias, conv.stride, conv.padding, conv.dilation)
        return out if out is not None else conv(torch.cat(x, dim=1))


def conv_parts(parts: Any, w: torch.Tensor, b: torch.Tensor | None, stride: Any, padding: Any,
               dilation: Any) -> torch.Tensor | None:
    """``conv2d(cat(parts, dim=1), w, b)`` (one group) as one convolution per part, summed.

    None when the parts do not fit the weight (dtype or channel count): the caller then runs
    the plain op, which raises its own error.
    """
    if any(p.dtype != w.dtype for p in parts) or sum(p.shape[1] for p in parts) != w.shape[1]:
        return None
    out, start = None, 0
    for part in parts:
        stop = start + part.shape[1]
        y = F.conv2d(part, w[:, start:stop], b if out is None else None, stride, padding,
                     dilation)
        out = y if out is None else out.add_(y)
        start = stop
    return out


def _readers(steps: list) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    for k, st in enumerate(steps):
        for pos, (is_slot, v) in enumerate(st.args):
            if is_slot:
                out.setdefault(v, []).append((k, pos))
    return out


def _splittable(conv: Any) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


def _kernel_for(st: Any) -> Callable | None:
    if len(st.args) == 1 and not st.kwargs and PointwiseConvGemm.applies(st.fn):
        return PointwiseConvGemm(st.fn)
    if BilinearUpsample2x.applies(st.fn, st.args, st.kwargs):
        return BilinearUpsample2x()
    return None


def plan_kernels(steps: list, protected: set[int]) -> None:
    """Set each step's ``kernel`` to a faster CPU inference form of its op, where one exists.

    ``protected`` slots (graph outputs) must hold real tensors, so a concatenation that ends
    there is never deferred.
    """
    from porter.converters.ops.shape import concat

    for st in steps:
        st.kernel = _kernel_for(st)
    readers = _readers(steps)
    for st in steps:
        if st.fn is not concat or len(st.outs) != 1 or st.outs[0] in protected:
            continue
        users = readers.get(st.outs[0], [])
        if len(users) != 1 or users[0][1] != 0:
            continue
        conv_step = steps[users[0][0]]
        if len(conv_step.args) == 1 and not conv_step.kwargs and _splittable(conv_step.fn):
            st.kernel = DeferredConcat()
            conv_step.kernel = SplitConv(conv_step.fn, conv_step.kernel)
