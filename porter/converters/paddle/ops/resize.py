"""nearest/bilinear/bicubic/linear/trilinear ``*_interp_v2`` (legacy) and ``pd_op.*_interp``.

Paddle picks the output size from, in order: the ``SizeTensor`` list, the ``OutSize`` tensor,
the ``Scale`` tensor or ``scale`` attribute (``int(in * scale)``), the ``out_h``/``out_w``
attributes. Where a scale is given, the source coordinate uses ``1 / scale`` even when a size
overrides it, exactly as torch's ``upsample_*`` kernels do when given both, so those are
called with both. ``align_mode=1`` (asymmetric, ``src = dst * ratio``) and nearest with
``align_corners`` (rounded) have no torch kernel and gather by index instead.
"""

from __future__ import annotations

import torch

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.registry import paddle_op


def interp_size(x: torch.Tensor, ndim: int, size, out_size, scale: list,
                attr_size: list) -> tuple[list, list]:
    """(output spatial size, scales or Nones) by Paddle's precedence."""
    spatial = list(x.shape[-ndim:])
    scales = [None] * ndim
    if scale and all(s > 0 for s in scale):
        scales = list(scale) if len(scale) == ndim else [scale[0]] * ndim
    if size is not None:
        return [int(s) for s in size], [None] * ndim
    if out_size is not None:
        return [int(s) for s in out_size], scales
    if scales[0] is not None:
        return [int(n * s) for n, s in zip(spatial, scales)], scales
    return [int(s) for s in attr_size], scales


def _ratio(n_in: int, n_out: int, align_corners: bool, scale) -> float:
    if n_out <= 1:
        return 0.0
    if align_corners:
        return (n_in - 1) / (n_out - 1)
    return 1.0 / scale if scale is not None else n_in / n_out


def _gather_linear(x: torch.Tensor, axis: int, n_out: int, ratio: float) -> torch.Tensor:
    n_in = x.shape[axis]
    src = torch.arange(n_out, dtype=torch.float32, device=x.device) * ratio
    lo = src.floor().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    w = (src - lo).clamp(0, 1)
    shape = [1] * x.dim()
    shape[axis] = n_out
    a = x.index_select(axis, lo.long())
    b = x.index_select(axis, hi.long())
    return a + (b - a) * w.reshape(shape).to(x.dtype)


def interp(x: torch.Tensor, method: str, size, out_size, scale: list, attr_size: list,
           align_corners: bool, align_mode: int, channels_last: bool) -> torch.Tensor:
    """Paddle's ``*_interp_v2`` on an N, C, spatial... tensor (or channels-last)."""
    nd = {"linear": 1, "nearest": 2, "bilinear": 2, "bicubic": 2, "trilinear": 3}[method]
    if method == "nearest" and x.dim() == 5:
        nd = 3
    if channels_last:
        x = x.movedim(-1, 1)
    out, scales = interp_size(x, nd, size, out_size, scale, attr_size)
    if method == "nearest" and not align_corners:
        fn = {1: torch.ops.aten.upsample_nearest1d.default,
              2: torch.ops.aten.upsample_nearest2d.default,
              3: torch.ops.aten.upsample_nearest3d.default}[nd]
        y = fn(x, out, *scales)
    elif method == "nearest":
        y = x
        for k in range(nd):
            axis = x.dim() - nd + k
            n_in = x.shape[axis]
            r = _ratio(n_in, out[k], True, None)
            idx = (torch.arange(out[k], dtype=torch.float32, device=x.device) * r + 0.5).long()
            y = y.index_select(axis, idx.clamp(max=n_in - 1))
    elif align_mode == 1 and not align_corners and method != "bicubic":
        y = x
        for k in range(nd):
            axis = x.dim() - nd + k
            y = _gather_linear(y, axis, out[k], _ratio(x.shape[axis], out[k], False, scales[k]))
    elif method == "linear":
        y = torch.ops.aten.upsample_linear1d.default(x, out, align_corners, *scales)
    elif method == "bilinear":
        y = torch.ops.aten.upsample_bilinear2d.default(x, out, align_corners, *scales)
    elif method == "bicubic":
        y = torch.ops.aten.upsample_bicubic2d.default(x, out, align_corners, *scales)
    else:
        y = torch.ops.aten.upsample_trilinear3d.default(x, out, align_corners, *scales)
    return y.movedim(1, -1) if channels_last else y


def _sizes_of(ctx: Context, i: int):
    if not ctx.has(i):
        return None
    return ctx.ints(i) if ctx.is_const(i) else In(i)


def _convert(op: PaddleOp, ctx: Context) -> Op:
    method = str(op.attr("interp_method", op.type.rpartition(".")[2].split("_")[0]))
    fmt = str(op.attr("data_layout", op.attr("data_format", "NCHW"))).upper()
    # inputs: x, out_size, size_tensor (a list), scale_tensor
    size, out_size = _sizes_of(ctx, 2), _sizes_of(ctx, 1)
    scale = list(op.attr("scale", []) or [])
    if isinstance(scale, float):
        scale = [scale]
    if ctx.has(3):
        if not ctx.is_const(3):
            raise Unsupported(f"{op.type} with a computed scale tensor")
        scale = ctx.floats(3)
    attr_size = [int(op.attr(k, -1)) for k in ("out_d", "out_h", "out_w")
                 if int(op.attr(k, -1)) > 0]
    if size is None and out_size is None and not (scale and scale[0] > 0) and not attr_size:
        raise Unsupported(f"{op.type} without an output size or scale")
    if method not in ("nearest", "bilinear", "bicubic", "linear", "trilinear"):
        raise Unsupported(f"interp_method {method!r}")
    args = (In(0), method, size, out_size, [float(s) for s in scale], attr_size,
            bool(op.attr("align_corners", False)), int(op.attr("align_mode", 1)),
            fmt in ("NHWC", "NWC", "NDHWC"))
    return Op(interp, args)


for _m in ("nearest", "bilinear", "bicubic", "linear", "trilinear"):
    paddle_op(f"{_m}_interp_v2", inputs=("X", "OutSize", "SizeTensor*", "Scale"))(_convert)
    paddle_op(f"pd_op.{_m}_interp", f"pd_op.{_m}_interp_")(_convert)
