"""Resize / Upsample: every mode, coordinate transform, nearest rounding, antialias, axes.

Common 2-D cases go straight to ``F.interpolate``; everything else is resized one axis at a
time by an interpolation matrix built exactly as the ONNX reference computes its coefficients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter


def _source_coords(mode: str, n_in: int, n_out: int, scale: float, roi) -> torch.Tensor:
    y = torch.arange(n_out, dtype=torch.float64)
    out_f = scale * n_in
    if mode == "align_corners":
        return torch.zeros_like(y) if out_f == 1 else y * (n_in - 1) / (out_f - 1)
    if mode == "asymmetric":
        return y / scale
    if mode == "tf_crop_and_resize":
        if out_f == 1:
            x = torch.full_like(y, (roi[1] - roi[0]) * (n_in - 1) / 2)
        else:
            x = y * (roi[1] - roi[0]) * (n_in - 1) / (out_f - 1)
        return x + roi[0] * (n_in - 1)
    if mode == "pytorch_half_pixel":
        return torch.full_like(y, -0.5) if out_f == 1 else (y + 0.5) / scale - 0.5
    if mode == "half_pixel_symmetric":
        adj = n_out / out_f
        return (n_in / 2) * (1 - adj) + (y + 0.5) / scale - 0.5
    return (y + 0.5) / scale - 0.5  # half_pixel


def _coeffs(ratio: torch.Tensor, scale: float, mode: str, a: float, antialias: int):
    """(offsets relative to the left pixel, weights [n_out, k]) per the ONNX reference."""
    if mode == "linear":
        if antialias and scale < 1:
            start = int(math.floor(-1 / scale) + 1)
            offs = torch.arange(start, 2 - start, dtype=torch.float64)
            w = torch.clamp(1 - torch.abs((offs[None] - ratio[:, None]) * scale), 0, 1)
            return offs.long(), w / w.sum(1, keepdim=True)
        return torch.tensor([0, 1]), torch.stack([1 - ratio, ratio], 1)
    # cubic
    if antialias and scale < 1:
        start = int(math.floor(-2 / scale) + 1)
        offs = torch.arange(start, 2 - start, dtype=torch.float64)
        t = torch.abs((offs[None] - ratio[:, None]) * scale)
        w = torch.where(t <= 1, (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1,
                        torch.where(t < 2, a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a,
                                    torch.zeros_like(t)))
        return offs.long(), w / w.sum(1, keepdim=True)
    r = ratio
    w = torch.stack([
        ((a * (r + 1) - 5 * a) * (r + 1) + 8 * a) * (r + 1) - 4 * a,
        ((a + 2) * r - (a + 3)) * r * r + 1,
        ((a + 2) * (1 - r) - (a + 3)) * (1 - r) * (1 - r) + 1,
        ((a * ((1 - r) + 1) - 5 * a) * ((1 - r) + 1) + 8 * a) * ((1 - r) + 1) - 4 * a,
    ], 1)
    return torch.tensor([-1, 0, 1, 2]), w


def _resize_axis(x: torch.Tensor, axis: int, n_out: int, scale: float, mode: str,
                 coord: str, nearest: str, a: float, exclude: int, extrap: float,
                 antialias: int, roi) -> torch.Tensor:
    n_in = x.shape[axis]
    xo = _source_coords(coord, n_in, n_out, scale, roi)
    if mode == "nearest":
        if nearest == "floor":
            idx = torch.floor(xo)
        elif nearest == "ceil":
            idx = torch.ceil(xo)
        elif nearest == "round_prefer_ceil":
            idx = torch.floor(xo + 0.5)
        else:  # round_prefer_floor
            idx = torch.ceil(xo - 0.5)
        idx = idx.long().clamp(0, n_in - 1)
        y = torch.index_select(x, axis, idx)
    else:
        left = torch.ceil(xo) - 1  # the reference prefers the pixel left of x, ratio in (0, 1]
        ratio = xo - left
        offs, w = _coeffs(ratio, scale, mode, a, antialias)
        idx = left.long()[:, None] + offs[None, :]
        if exclude:
            w = torch.where((idx < 0) | (idx >= n_in), torch.zeros_like(w), w)
            w = w / w.sum(1, keepdim=True)
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        m.scatter_add_(1, idx.clamp(0, n_in - 1), w)
        xt = x.movedim(axis, -1)
        y = torch.matmul(xt.to(torch.float64), m.t()).to(x.dtype).movedim(-1, axis)
    if coord == "tf_crop_and_resize":
        outside = (xo < 0) | (xo > n_in - 1)
        if bool(outside.any()):
            shape = [1] * x.dim()
            shape[axis] = n_out
            y = torch.where(outside.reshape(shape), torch.tensor(extrap, dtype=y.dtype), y)
    return y


def resize(x: torch.Tensor, roi=None, scales=None, sizes=None, mode: str = "nearest",
           coordinate_transformation_mode: str = "half_pixel",
           nearest_mode: str = "round_prefer_floor", cubic_coeff_a: float = -0.75,
           exclude_outside: int = 0, extrapolation_value: float = 0.0, antialias: int = 0,
           axes=None, keep_aspect_ratio_policy: str = "stretch") -> torch.Tensor:
    """ONNX Resize (opsets 10-19)."""
    rank = x.dim()

    def floats(v):
        if v is None:
            return None
        v = v.reshape(-1).tolist() if isinstance(v, torch.Tensor) else list(v)
        return [float(t) for t in v] or None

    scales, roi = floats(scales), floats(roi)
    if sizes is not None:  # sizes may be symbolic (torch.SymInt) shape arithmetic
        sizes = [s if isinstance(s, torch.SymInt) else int(s) for s in
                 (sizes.reshape(-1).tolist() if isinstance(sizes, torch.Tensor) else sizes)]
        sizes = sizes or None
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    in_shape = list(x.shape)
    if sizes is not None:
        full_scales = [1.0] * rank
        out = list(in_shape)
        for a, s in zip(axes, sizes):
            out[a] = s
            full_scales[a] = s / in_shape[a]
        if keep_aspect_ratio_policy != "stretch":
            pick = min if keep_aspect_ratio_policy == "not_larger" else max
            s = pick(full_scales[a] for a in axes)
            for a in axes:
                full_scales[a] = s
                out[a] = int(s * in_shape[a] + 0.5)
    else:
        full_scales = [1.0] * rank
        for a, s in zip(axes, scales):
            full_scales[a] = s
        out = [int(math.floor(s * n)) for s, n in zip(full_scales, in_shape)]
    full_roi = None
    if roi is not None:
        full_roi = [0.0] * rank + [1.0] * rank
        k = len(axes)
        for i, a in enumerate(axes):
            full_roi[a], full_roi[a + rank] = roi[i], roi[i + k]
    coord = coordinate_transformation_mode
    moved = [a for a in range(rank) if out[a] != in_shape[a] or not math.isclose(
        full_scales[a], 1.0) or (coord == "tf_crop_and_resize" and full_roi is not None and (
            full_roi[a] != 0.0 or full_roi[a + rank] != 1.0))]
    if (rank == 4 and moved and min(moved) >= 2 and not antialias and not exclude_outside
            and x.is_floating_point()):
        fast = None
        if mode == "linear" and (coord == "half_pixel" or (
                coord == "pytorch_half_pixel" and min(out[2:]) > 1)):
            fast = {"mode": "bilinear", "align_corners": False}
        elif mode == "nearest" and coord == "asymmetric" and nearest_mode == "floor" and all(
                float(full_scales[a]).is_integer() for a in (2, 3)):
            fast = {"mode": "nearest"}
        if fast is not None:
            if sizes is None:
                return F.interpolate(x, scale_factor=(full_scales[2], full_scales[3]),
                                     recompute_scale_factor=False, **fast)
            if keep_aspect_ratio_policy == "stretch":
                return F.interpolate(x, size=(out[2], out[3]), **fast)
    y = x
    for a in reversed(moved):
        y = _resize_axis(y, a, out[a], full_scales[a], mode, coord, nearest_mode,
                         cubic_coeff_a, exclude_outside, extrapolation_value, antialias,
                         None if full_roi is None else (full_roi[a], full_roi[a + rank]))
    return y


def interpolate(x: torch.Tensor, scales: tuple[float, float], mode: str = "bilinear",
                align_corners: bool | None = None, pytorch_half_pixel: bool = False):
    """Resize of H and W by constant scales through F.interpolate (the common 2-D case)."""
    sh, sw = scales
    if pytorch_half_pixel:  # an output of size 1 samples the first row / column
        # sizes and scales are positive, so int() is floor (and the helper needs no math)
        if int(x.shape[2] * sh) == 1:
            x, sh = x[:, :, :1], 1.0
        if int(x.shape[3] * sw) == 1:
            x, sw = x[:, :, :, :1], 1.0
    return F.interpolate(x, scale_factor=(sh, sw), mode=mode, align_corners=align_corners,
                         recompute_scale_factor=False)


def _fast(kw: dict, scales) -> Op | None:
    """Use ``interpolate`` when constant 4-D scales and the attributes match F.interpolate."""
    if (not isinstance(scales, tuple) or len(scales) != 4 or scales[:2] != (1.0, 1.0)
            or kw.get("antialias") or kw.get("exclude_outside") or "axes" in kw):
        return None
    mode = kw.get("mode", "nearest")
    coord = kw.get("coordinate_transformation_mode", "half_pixel")
    if mode == "linear" and coord in ("half_pixel", "pytorch_half_pixel"):
        return Op(interpolate, (In(0), scales[2:]), {
            "mode": "bilinear", "align_corners": False,
            "pytorch_half_pixel": coord == "pytorch_half_pixel"})
    if (mode == "nearest" and coord == "asymmetric" and kw.get("nearest_mode") == "floor"
            and all(float(s).is_integer() for s in scales)):
        return Op(interpolate, (In(0), scales[2:]), {"mode": "nearest"})
    return None


def _const_or_in(ctx: Context, i: int, as_int: bool):
    if not ctx.has(i):
        return None
    v = ctx.const(i)
    if v is None:
        return In(i)
    if v.size == 0:
        return None
    return tuple(int(t) for t in v.reshape(-1)) if as_int else tuple(
        float(t) for t in v.reshape(-1))


_ATTRS = ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
          "exclude_outside", "extrapolation_value", "antialias", "keep_aspect_ratio_policy")


@converter("Resize", since=(10, 11, 13, 18, 19))
def _resize(node: Node, ctx: Context) -> Op:
    kw = {k: node.attr(k) for k in _ATTRS if node.attr(k) is not None}
    if node.attr("axes") is not None:
        kw["axes"] = tuple(node.attr("axes"))
    if node.opset == 10:
        kw.setdefault("coordinate_transformation_mode", "asymmetric")
        kw.setdefault("nearest_mode", "floor")
        scales = _const_or_in(ctx, 1, False)
        return _fast(kw, scales) or Op(resize, (In(0), None, scales), kw)
    scales = _const_or_in(ctx, 2, False)
    if not ctx.has(3) or ctx.const(3) is not None and ctx.const(3).size == 0:
        fast = _fast(kw, scales)
        if fast is not None:
            return fast
    return Op(resize, (In(0), _const_or_in(ctx, 1, False), scales,
                       _const_or_in(ctx, 3, True)), kw)


@converter("Upsample", since=(7, 9, 10))
def _upsample(node: Node, ctx: Context) -> Op:
    kw = {"mode": node.attr("mode", "nearest"), "coordinate_transformation_mode": "asymmetric",
          "nearest_mode": "floor"}
    if node.opset < 9:
        return Op(resize, (In(0), None, tuple(node.attr("scales"))), kw)
    return Op(resize, (In(0), None, _const_or_in(ctx, 1, False)), kw)
