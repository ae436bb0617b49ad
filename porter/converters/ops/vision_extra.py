"""Detection and image ops: NonMaxSuppression, Unique, RoiAlign, DeformConv, Col2Im, MaxUnpool,
CenterCropPad, ImageDecoder (+ the trivial ai.onnx.ml Binarizer / ArrayFeatureExtractor)."""

from __future__ import annotations

import math

import torch

from porter.converters.context import Context, In, Node, Op
from porter.converters.registry import converter


def _corners(b: torch.Tensor, center: int) -> torch.Tensor:
    """[..., 4] boxes as (y1, x1, y2, x2) with y1 <= y2 and x1 <= x2."""
    if center:
        x, y, w, h = b.unbind(-1)
        return torch.stack([y - h / 2, x - w / 2, y + h / 2, x + w / 2], -1)
    y1, x1, y2, x2 = b.unbind(-1)
    return torch.stack([torch.minimum(y1, y2), torch.minimum(x1, x2),
                        torch.maximum(y1, y2), torch.maximum(x1, x2)], -1)


def _iou(b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of [N, 4] corner boxes; 0 where boxes do not overlap or are empty."""
    lo = torch.maximum(b[:, None, :2], b[None, :, :2])
    hi = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = (hi - lo).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area[:, None] + area[None, :] - inter
    ok = (inter > 0) & (area[:, None] > 0) & (area[None, :] > 0) & (union > 0)
    return torch.where(ok, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(inter))


def non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor,
                        max_out: torch.Tensor | None = None, iou_thr: torch.Tensor | None = None,
                        score_thr: torch.Tensor | None = None,
                        center_point_box: int = 0) -> torch.Tensor:
    """Greedy per-(batch, class) NMS; returns [num_selected, 3] int64 (batch, class, box)."""
    limit = int(max_out.reshape(-1)[0]) if max_out is not None and max_out.numel() else 0
    thr = float(iou_thr.reshape(-1)[0]) if iou_thr is not None and iou_thr.numel() else 0.0
    rows: list[list[int]] = []
    for bi in range(boxes.shape[0]):
        iou = _iou(_corners(boxes[bi], center_point_box))
        for ci in range(scores.shape[1]):
            s = scores[bi, ci]
            cand = torch.arange(s.shape[0])
            if score_thr is not None and score_thr.numel():
                cand = cand[s > score_thr.reshape(-1)[0]]
            # descending score; equal scores keep the lower box index first
            cand = cand[torch.argsort(s[cand], descending=True, stable=True)].tolist()
            kept: list[int] = []
            for k in cand:
                if len(kept) >= limit:
                    break
                if not kept or not bool((iou[k, kept] > thr).any()):
                    kept.append(k)
                    rows.append([bi, ci, k])
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)


@converter("NonMaxSuppression", since=(10, 11))
def _nms(node: Node, ctx: Context) -> Op:
    args = [In(i) if ctx.has(i) else None for i in range(5)]
    return Op(non_max_suppression, tuple(args), {"center_point_box": node.attr("center_point_box", 0)})


def unique(x: torch.Tensor, axis: int | None = None,
           sorted_: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(unique values, first-occurrence indices, inverse indices, counts) along ``axis``."""
    if axis is None:
        src, dim = x.reshape(-1), 0
    else:
        src, dim = x, axis % x.dim()
    y, inv, counts = torch.unique(src, sorted=True, return_inverse=True, return_counts=True,
                                  dim=dim)
    n = counts.shape[0]
    pos = torch.arange(inv.shape[0], dtype=torch.int64)
    first = torch.full((n,), inv.shape[0], dtype=torch.int64).scatter_reduce(
        0, inv, pos, reduce="amin")
    if not sorted_:
        perm = torch.argsort(first)
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(n, dtype=torch.int64)
        y, first, inv, counts = y.index_select(dim, perm), first[perm], rank[inv], counts[perm]
    return y, first, inv.to(torch.int64), counts.to(torch.int64)


@converter("Unique", since=(11, 28))
def _unique(node: Node, ctx: Context) -> Op:
    return Op(unique, (In(0), node.attr("axis"), node.attr("sorted", 1)), n_out=4)


def roi_align(x: torch.Tensor, rois: torch.Tensor, batch_indices: torch.Tensor,
              out_hw: tuple[int, int] = (1, 1), sampling_ratio: int = 0,
              spatial_scale: float = 1.0, mode: str = "avg",
              half_pixel: bool = True) -> torch.Tensor:
    """RoiAlign: bilinear samples on a regular grid in each output bin, averaged or maxed."""
    ph, pw = out_hw
    height, width = x.shape[2], x.shape[3]
    offset = 0.5 if half_pixel else 0.0
    outs = []
    for r in range(rois.shape[0]):
        x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in rois[r])
        rh, rw = y2 - y1, x2 - x1
        if not half_pixel:
            rh, rw = max(rh, 1.0), max(rw, 1.0)
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw)
        ys, vy, y_lo, y_hi, ly = _roi_axis(y1, rh / ph, ph, gh, height)
        xs, vx, x_lo, x_hi, lx = _roi_axis(x1, rw / pw, pw, gw, width)
        img = x[int(batch_indices[r])].to(torch.float64)  # [C, H, W]
        valid = (vy[:, None] & vx[None, :]).to(torch.float64)
        corners = []
        for yi, wy in ((y_lo, 1 - ly), (y_hi, ly)):
            for xi, wx in ((x_lo, 1 - lx), (x_hi, lx)):
                w = wy[:, None] * wx[None, :] * valid
                corners.append(img[:, yi][:, :, xi] * w)
        c = img.shape[0]
        if mode == "avg":
            v = sum(corners).reshape(c, ph, gh, pw, gw).sum((2, 4)) / max(gh * gw, 1)
        else:
            v = torch.stack(corners).amax(0).reshape(c, ph, gh, pw, gw).amax((2, 4))
        outs.append(v)
    if not outs:
        return x.new_zeros((0, x.shape[1], ph, pw))
    return torch.stack(outs).to(x.dtype)


def _roi_axis(start: float, bin_size: float, pooled: int, grid: int,
              size: int) -> tuple[torch.Tensor, ...]:
    """Sample coordinates along one axis: (coords, valid, low index, high index, frac)."""
    p = torch.arange(pooled, dtype=torch.float64)[:, None]
    g = torch.arange(grid, dtype=torch.float64)[None, :]
    c = (start + p * bin_size + (g + 0.5) * bin_size / grid).reshape(-1)
    valid = (c >= -1.0) & (c <= size)
    c = c.clamp(min=0)
    lo = c.floor().to(torch.int64)
    edge = lo >= size - 1
    lo = torch.where(edge, torch.full_like(lo, size - 1), lo)
    hi = torch.where(edge, lo, lo + 1)
    c = torch.where(edge, lo.to(c.dtype), c)
    return c, valid, lo, hi, c - lo


@converter("RoiAlign", since=(10, 16, 22))
def _roi_align(node: Node, ctx: Context) -> Op:
    default_mode = "half_pixel" if node.opset >= 16 else "output_half_pixel"
    ctm = node.attr("coordinate_transformation_mode", default_mode)
    return Op(roi_align, (In(0), In(1), In(2)), {
        "out_hw": (node.attr("output_height", 1), node.attr("output_width", 1)),
        "sampling_ratio": node.attr("sampling_ratio", 0),
        "spatial_scale": float(node.attr("spatial_scale", 1.0)),
        "mode": node.attr("mode", "avg").lower(), "half_pixel": ctm == "half_pixel"})


def deform_conv(x: torch.Tensor, w: torch.Tensor, offset: torch.Tensor,
                b: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                strides: tuple[int, int] = (1, 1), pads: tuple[int, ...] = (0, 0, 0, 0),
                dilations: tuple[int, int] = (1, 1), group: int = 1,
                offset_group: int = 1) -> torch.Tensor:
    """2-D deformable convolution: bilinear samples (zero outside) at offset kernel taps."""
    n, c, height, width = x.shape
    kh, kw = w.shape[2], w.shape[3]
    oh, ow = offset.shape[2], offset.shape[3]
    og = offset_group
    off = offset.reshape(n, og, kh, kw, 2, oh, ow)
    base_y = (torch.arange(oh) * strides[0] - pads[0])[None, :, None] + (
        torch.arange(kh) * dilations[0])[:, None, None]  # [kh, oh, 1]
    base_x = (torch.arange(ow) * strides[1] - pads[1])[None, None, :] + (
        torch.arange(kw) * dilations[1])[:, None, None]  # [kw, 1, ow]
    py = base_y[None, None, :, None].to(x.dtype) + off[:, :, :, :, 0]  # [n, og, kh, kw, oh, ow]
    px = base_x[None, None, None, :].to(x.dtype) + off[:, :, :, :, 1]
    img = x.reshape(n, og, c // og, height * width)
    y0, x0 = py.floor(), px.floor()
    cols = torch.zeros(n, og, c // og, kh * kw * oh * ow, dtype=x.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            ok = (yy >= 0) & (yy <= height - 1) & (xx >= 0) & (xx <= width - 1)
            idx = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).to(torch.int64)
            idx = idx.reshape(n, og, 1, -1).expand(-1, -1, c // og, -1)
            wgt = (wy * wx * ok).reshape(n, og, 1, -1)
            cols = cols + img.gather(3, idx) * wgt
    cols = cols.reshape(n, c, kh * kw, oh * ow)
    if mask is not None:
        cols = cols * mask.reshape(n, og, 1, kh * kw, oh * ow).expand(
            -1, -1, c // og, -1, -1).reshape(n, c, kh * kw, oh * ow)
    cols = cols.reshape(n, group, (c // group) * kh * kw, oh * ow)
    wg = w.reshape(group, w.shape[0] // group, -1)
    y = torch.einsum("gok,ngkl->ngol", wg, cols).reshape(n, w.shape[0], oh, ow)
    return y if b is None else y + b.reshape(1, -1, 1, 1)


@converter("DeformConv", since=(19, 22))
def _deform_conv(node: Node, ctx: Context) -> Op:
    opt = [In(i) if ctx.has(i) else None for i in (3, 4)]
    return Op(deform_conv, (In(0), In(1), In(2), *opt), {
        "strides": tuple(node.attr("strides", [1, 1])),
        "pads": tuple(node.attr("pads", [0, 0, 0, 0])),
        "dilations": tuple(node.attr("dilations", [1, 1])),
        "group": node.attr("group", 1), "offset_group": node.attr("offset_group", 1)})


def col2im(x: torch.Tensor, image_shape: torch.Tensor, block_shape: torch.Tensor,
           dilations: list[int] | None = None, pads: list[int] | None = None,
           strides: list[int] | None = None) -> torch.Tensor:
    """Sum [N, C*prod(block), L] column blocks back into an [N, C, *image_shape] image."""
    img = [int(v) for v in image_shape]
    blk = [int(v) for v in block_shape]
    nd = len(img)
    dil = dilations or [1] * nd
    pad = pads or [0] * (2 * nd)
    st = strides or [1] * nd
    padded = [img[d] + pad[d] + pad[nd + d] for d in range(nd)]
    counts = [(padded[d] - dil[d] * (blk[d] - 1) - 1) // st[d] + 1 for d in range(nd)]
    k_idx = torch.zeros(1, dtype=torch.int64)
    l_idx = torch.zeros(1, dtype=torch.int64)
    for d in range(nd):  # row-major flat offsets of kernel taps and block origins
        k_idx = (k_idx[:, None] * padded[d] + torch.arange(blk[d]) * dil[d]).reshape(-1)
        l_idx = (l_idx[:, None] * padded[d] + torch.arange(counts[d]) * st[d]).reshape(-1)
    idx = (k_idx[:, None] + l_idx[None, :]).reshape(-1)
    n = x.shape[0]
    cols = x.reshape(n, -1, idx.shape[0])
    out = torch.zeros(n, cols.shape[1], math.prod(padded), dtype=x.dtype)
    out = out.index_add(2, idx, cols).reshape(n, cols.shape[1], *padded)
    for d in range(nd):
        out = out.narrow(2 + d, pad[d], img[d])
    return out


@converter("Col2Im", since=(18,))
def _col2im(node: Node, ctx: Context) -> Op:
    return Op(col2im, (In(0), In(1), In(2)), {
        "dilations": node.attr("dilations"), "pads": node.attr("pads"),
        "strides": node.attr("strides")})


def max_unpool(x: torch.Tensor, indices: torch.Tensor, output_shape: torch.Tensor | None = None,
               kernel_shape: list[int] | None = None, pads: list[int] | None = None,
               strides: list[int] | None = None) -> torch.Tensor:
    """Scatter pooled values to their (whole-tensor flat) indices; zero-extend to output_shape."""
    nd = len(kernel_shape)
    st = strides or [1] * nd
    pad = pads or [0] * (2 * nd)
    shape = list(x.shape[:2]) + [(x.shape[2 + d] - 1) * st[d] - pad[d] - pad[nd + d]
                                 + kernel_shape[d] for d in range(nd)]
    y = torch.zeros(math.prod(shape), dtype=x.dtype)
    y = y.scatter(0, indices.reshape(-1).to(torch.int64), x.reshape(-1)).reshape(shape)
    if output_shape is None:
        return y
    out = torch.zeros([int(v) for v in output_shape], dtype=x.dtype)
    out[tuple(slice(0, s) for s in shape)] = y
    return out


@converter("MaxUnpool", since=(9, 11, 22))
def _max_unpool(node: Node, ctx: Context) -> Op:
    return Op(max_unpool, (In(0), In(1), In(2) if ctx.has(2) else None), {
        "kernel_shape": node.attr("kernel_shape"), "pads": node.attr("pads"),
        "strides": node.attr("strides")})


def center_crop_pad(x: torch.Tensor, shape: torch.Tensor,
                    axes: list[int] | None = None) -> torch.Tensor:
    """Center-crop or zero-pad each of ``axes`` to ``shape`` (odd excess goes to the end)."""
    axes = list(range(x.dim())) if axes is None else [a % x.dim() for a in axes]
    for a, size in zip(axes, [int(v) for v in shape]):
        dim = x.shape[a]
        if size < dim:
            x = x.narrow(a, (dim - size) // 2, size)
        elif size > dim:
            before = (size - dim) // 2
            parts = [x.new_zeros([*x.shape[:a], before, *x.shape[a + 1:]]), x,
                     x.new_zeros([*x.shape[:a], size - dim - before, *x.shape[a + 1:]])]
            x = torch.cat(parts, a)
    return x


@converter("CenterCropPad", since=(18,))
def _center_crop_pad(node: Node, ctx: Context) -> Op:
    return Op(center_crop_pad, (In(0), In(1), node.attr("axes")))


def image_decoder(data: torch.Tensor, pixel_format: str = "RGB") -> torch.Tensor:
    """Decode encoded image bytes to [H, W, 3] (RGB / BGR) or [H, W, 1] (Grayscale) uint8.

    Uses Pillow (imported here), so an exported model with this op needs Pillow installed.
    """
    import io

    import PIL.Image

    img = PIL.Image.open(io.BytesIO(data.to(torch.uint8).numpy().tobytes()))
    if pixel_format == "Grayscale":
        return torch.frombuffer(bytearray(img.convert("L").tobytes()), dtype=torch.uint8
                                ).reshape(img.height, img.width, 1)
    rgb = img.convert("RGB")
    y = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).reshape(
        rgb.height, rgb.width, 3)
    return y.flip(-1) if pixel_format == "BGR" else y


@converter("ImageDecoder", since=(20,))
def _image_decoder(node: Node, ctx: Context) -> Op:
    return Op(image_decoder, (In(0), node.attr("pixel_format", "RGB")))


def binarizer(x: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    return (x > threshold).to(x.dtype)


@converter("Binarizer", since=(1,), domain="ai.onnx.ml")
def _binarizer(node: Node, ctx: Context) -> Op:
    return Op(binarizer, (In(0), float(node.attr("threshold", 0.0))))


def array_feature_extractor(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Select ``indices`` (flattened) along the last axis; a 1-D input gives one row."""
    y = x.index_select(-1, indices.reshape(-1).to(torch.int64))
    return y.reshape(1, -1) if x.dim() == 1 else y


@converter("ArrayFeatureExtractor", since=(1,), domain="ai.onnx.ml")
def _array_feature_extractor(node: Node, ctx: Context) -> Op:
    return Op(array_feature_extractor, (In(0), In(1)))
