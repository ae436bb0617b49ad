"""Shape and data movement: reshape, transpose, flatten, (un)squeeze, concat, split, slice,
stack, shape, pad3d, expand, tile, gather, and PIR's ``builtin.combine``/``split``/``slice``.

Shapes and index lists may arrive as constants (folded at conversion time, so the step gets
plain ints) or as tensors computed at run time (``shape`` -> ``slice`` -> ``reshape``); the
helpers accept both. A 0 in a Paddle reshape copies the input's dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from porter.converters.paddle.context import Context, In, Op, PaddleOp, Unsupported
from porter.converters.paddle.registry import paddle_op


def as_ints(v) -> list:
    """A shape-like value (ints, a tensor, a list of 1-element tensors) as python ints; sizes
    read from a tensor's shape stay symbolic under tracing."""
    if isinstance(v, torch.Tensor):
        return [int(t) for t in v.reshape(-1)]
    if not isinstance(v, (list, tuple)):
        return [v]
    out = []
    for t in v:
        if isinstance(t, torch.Tensor):
            out += [int(e) for e in t.reshape(-1)]
        elif isinstance(t, (list, tuple)):
            out += as_ints(t)
        else:
            out.append(t)
    return out


def reshape(x: torch.Tensor, shape) -> torch.Tensor:
    """Paddle reshape: -1 is inferred, 0 copies the input's dimension."""
    dims = as_ints(shape)
    return x.reshape([x.shape[i] if d == 0 else d for i, d in enumerate(dims)])


def combine(*xs):
    """PIR ``builtin.combine``: several values as one list value."""
    return list(xs)


def unpack(xs, n: int) -> tuple:
    """PIR ``builtin.split``: a list value back into ``n`` values."""
    return tuple(xs[:n])


def item(xs, index: int):
    return xs[index]


@paddle_op("builtin.combine")
def _combine(op: PaddleOp, ctx: Context) -> Op:
    n = len(op.inputs)
    if any(ctx.shape_like(i) for i in range(n)):  # a shape list: constant sizes as literals
        args = []
        for i in range(n):
            v = ctx.const(i)
            small = isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point()
            args.append(int(v.reshape(-1)[0]) if small else In(i))
        return Op(combine, tuple(args))
    return Op(combine, tuple(In(i) for i in range(n)))


@paddle_op("builtin.split")
def _unpack(op: PaddleOp, ctx: Context) -> Op:
    n = len(op.outputs)
    return Op(unpack, (In(0), n), n_out=n)


@paddle_op("builtin.slice")
def _item(op: PaddleOp, ctx: Context) -> Op:
    return Op(item, (In(0), int(op.attr("index", 0))))


def _shape_arg(ctx: Context, i: int, attr_shape):
    if ctx.has(i):
        return ctx.ints(i) if ctx.is_const(i) else In(i)
    return attr_shape


@paddle_op("reshape2", "reshape", inputs=("X", "Shape", "ShapeTensor*"),
           outputs=("Out", "XShape"))
def _reshape_legacy(op: PaddleOp, ctx: Context) -> Op:
    shape = _shape_arg(ctx, 2, None)
    if shape is None:
        shape = _shape_arg(ctx, 1, list(op.attr("shape", [])))
    return Op(reshape, (In(0), shape))


@paddle_op("pd_op.reshape", "pd_op.reshape_")
def _reshape(op: PaddleOp, ctx: Context) -> Op:
    return Op(reshape, (In(0), _shape_arg(ctx, 1, None)))


@paddle_op("transpose2", "transpose", inputs=("X",), outputs=("Out", "XShape"))
@paddle_op("pd_op.transpose", "pd_op.transpose_")
def _transpose(op: PaddleOp, ctx: Context) -> Op:
    return Op(torch.permute, (In(0), tuple(int(a) for a in op.attr("perm", op.attr("axis")))))


@paddle_op("flatten_contiguous_range", inputs=("X",), outputs=("Out", "XShape"))
@paddle_op("pd_op.flatten", "pd_op.flatten_")
def _flatten(op: PaddleOp, ctx: Context) -> Op:
    return Op(torch.flatten, (In(0), int(op.attr("start_axis", 1)), int(op.attr("stop_axis", -1))))


def flatten2(x: torch.Tensor, axis: int) -> torch.Tensor:
    """Legacy ``flatten``/``flatten2``: to 2-D, split at ``axis``."""
    return x.reshape(x.shape[:axis].numel() if axis else 1, -1)


@paddle_op("flatten2", "flatten", inputs=("X",), outputs=("Out", "XShape"))
def _flatten2(op: PaddleOp, ctx: Context) -> Op:
    return Op(flatten2, (In(0), int(op.attr("axis", 1))))


def squeeze(x: torch.Tensor, axes: list) -> torch.Tensor:
    """Paddle squeeze: drop the listed axes that have size 1 (all size-1 axes when empty)."""
    if not axes:
        return x.squeeze() if x.dim() else x
    dims = sorted({a % x.dim() for a in axes if x.shape[a] == 1}, reverse=True)
    for d in dims:
        x = x.squeeze(d)
    return x


def unsqueeze(x: torch.Tensor, axes: list) -> torch.Tensor:
    """Paddle unsqueeze: insert axes one by one, a negative one counted on the grown rank."""
    for a in axes:
        x = x.unsqueeze(a if a >= 0 else a + x.dim() + 1)
    return x


def _axes(ctx: Context, i: int, op: PaddleOp, attr: str) -> list:
    v = ctx.int_list(i, attr, [])
    if isinstance(v, In):
        raise Unsupported(f"{op.type} over computed axes")
    return list(v or [])


@paddle_op("squeeze2", "squeeze", inputs=("X",), outputs=("Out", "XShape"))
def _squeeze_legacy(op: PaddleOp, ctx: Context) -> Op:
    return Op(squeeze, (In(0), list(op.attr("axes", []))))


@paddle_op("pd_op.squeeze", "pd_op.squeeze_")
def _squeeze(op: PaddleOp, ctx: Context) -> Op:
    return Op(squeeze, (In(0), _axes(ctx, 1, op, "axis")))


@paddle_op("unsqueeze2", "unsqueeze", inputs=("X", "AxesTensor", "AxesTensorList*"),
           outputs=("Out", "XShape"))
def _unsqueeze_legacy(op: PaddleOp, ctx: Context) -> Op:
    axes = _axes(ctx, 2, op, "") if ctx.has(2) else _axes(ctx, 1, op, "axes")
    return Op(unsqueeze, (In(0), axes))


@paddle_op("pd_op.unsqueeze", "pd_op.unsqueeze_")
def _unsqueeze(op: PaddleOp, ctx: Context) -> Op:
    return Op(unsqueeze, (In(0), _axes(ctx, 1, op, "axis")))


def concat(xs, axis: int) -> torch.Tensor:
    """``torch.cat``; shape values (python lists of sizes) concatenate as lists."""
    if any(isinstance(x, list) for x in xs):
        return as_ints(list(xs))
    return torch.cat(list(xs), dim=axis)


@paddle_op("concat", inputs=("X*", "AxisTensor"))
@paddle_op("pd_op.concat")
def _concat(op: PaddleOp, ctx: Context) -> Op:
    return Op(concat, (In(0), int(ctx.scalar(1, "axis", 0))))


def stack(xs, axis: int) -> torch.Tensor:
    """``torch.stack``; sizes (python ints, e.g. from a sliced shape) stack into a list."""
    if not all(isinstance(x, torch.Tensor) for x in xs):
        return as_ints(list(xs))
    return torch.stack(list(xs), dim=axis)


@paddle_op("stack", inputs=("X*",), outputs=("Y",))
@paddle_op("pd_op.stack")
def _stack(op: PaddleOp, ctx: Context) -> Op:
    return Op(stack, (In(0), int(op.attr("axis", 0))))


def split(x: torch.Tensor, sections: list, num: int, axis: int) -> list:
    """Paddle split: ``num`` equal parts, or ``sections`` (one -1 is inferred)."""
    axis = axis % x.dim()
    if num:
        return list(torch.split(x, x.shape[axis] // num, dim=axis))
    sizes = list(sections)
    if -1 in sizes:
        k = sizes.index(-1)
        sizes[k] = x.shape[axis] - sum(s for i, s in enumerate(sizes) if i != k)
    return list(torch.split(x, sizes, dim=axis))


@paddle_op("split", inputs=("X", "AxisTensor"), outputs=("Out*",))
def _split_legacy(op: PaddleOp, ctx: Context) -> Op:
    axis = int(ctx.scalar(1, "axis", 0))
    n = len(op.outputs)
    return Op(split, (In(0), list(op.attr("sections", [])), int(op.attr("num", 0)), axis),
              n_out=n)


@paddle_op("pd_op.split")
def _split(op: PaddleOp, ctx: Context) -> Op:
    sections = _axes(ctx, 1, op, "sections")
    return Op(split, (In(0), sections, 0, int(ctx.scalar(2, "axis", 0))))


@paddle_op("pd_op.split_with_num")
def _split_num(op: PaddleOp, ctx: Context) -> Op:
    return Op(split, (In(0), [], int(op.attr("num")), int(ctx.scalar(1, "axis", 0))))


def slice_(x: torch.Tensor, axes: list, starts, ends, strides, decrease: list) -> torch.Tensor:
    """Paddle slice/strided_slice: python slicing per axis, then drop ``decrease`` axes."""
    starts, ends = as_ints(starts), as_ints(ends)
    steps = as_ints(strides) if strides is not None else [1] * len(axes)
    if isinstance(x, list):  # a shape value: slice the list of sizes
        y = x[starts[0]:ends[0]:steps[0]]
        return y[0] if decrease else y
    index = [slice(None)] * x.dim()
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(s, e, st)
    y = x[tuple(index)]
    if decrease:
        dims = sorted({d % x.dim() for d in decrease}, reverse=True)
        if len(dims) == y.dim():
            return y.reshape([])
        for d in dims:
            y = y.squeeze(d)
    return y


def flip_slice(x: torch.Tensor, axes: list, starts, ends, strides, decrease: list
               ) -> torch.Tensor:
    """A strided slice with negative strides (torch indexing refuses them): flip, then slice."""
    starts, ends, steps = as_ints(starts), as_ints(ends), as_ints(strides)
    for a, s, e, st in zip(axes, starts, ends, steps):
        n = x.shape[a]
        if st < 0:
            s = n + s if s < 0 else min(s, n - 1)
            e = n + e if e < 0 else e
            idx = torch.arange(s, max(e, -1), st, device=x.device)
            idx = idx[(idx >= 0) & (idx < n)]
            x = x.index_select(a, idx)
        else:
            x = slice_(x, [a], [s], [e], [st], [])
    return slice_(x, [], [], [], None, decrease)


def _index_arg(ctx: Context, i: int, attr: str, op: PaddleOp):
    if ctx.has(i):
        return ctx.ints(i) if ctx.is_const(i) else In(i)
    return list(op.attr(attr, []))


@paddle_op("slice", inputs=("Input", "StartsTensor", "EndsTensor", "StartsTensorList*",
                            "EndsTensorList*"))
def _slice_legacy(op: PaddleOp, ctx: Context) -> Op:
    starts = _index_arg(ctx, 3, "starts", op) if ctx.has(3) else _index_arg(ctx, 1, "starts", op)
    ends = _index_arg(ctx, 4, "ends", op) if ctx.has(4) else _index_arg(ctx, 2, "ends", op)
    return Op(slice_, (In(0), list(op.attr("axes", [])), starts, ends, None,
                       list(op.attr("decrease_axis", []))))


@paddle_op("pd_op.slice")
def _slice(op: PaddleOp, ctx: Context) -> Op:
    return Op(slice_, (In(0), list(op.attr("axes", [])), _index_arg(ctx, 1, "starts", op),
                       _index_arg(ctx, 2, "ends", op), None, list(op.attr("decrease_axis", []))))


def _strided(op: PaddleOp, axes, starts, ends, strides) -> Op:
    if isinstance(strides, list) and any(s < 0 for s in strides):
        return Op(flip_slice, (In(0), axes, starts, ends, strides, []))
    if isinstance(strides, In):
        raise Unsupported("strided_slice with computed strides")
    return Op(slice_, (In(0), axes, starts, ends, strides, []))


@paddle_op("strided_slice", inputs=("Input", "StartsTensor", "EndsTensor", "StridesTensor"))
def _strided_legacy(op: PaddleOp, ctx: Context) -> Op:
    if op.attr("decrease_axis"):
        raise Unsupported("strided_slice with decrease_axis")
    return _strided(op, list(op.attr("axes", [])), _index_arg(ctx, 1, "starts", op),
                    _index_arg(ctx, 2, "ends", op), _index_arg(ctx, 3, "strides", op))


@paddle_op("pd_op.strided_slice")
def _strided_pir(op: PaddleOp, ctx: Context) -> Op:
    return _strided(op, list(op.attr("axes", [])), _index_arg(ctx, 1, "starts", op),
                    _index_arg(ctx, 2, "ends", op), _index_arg(ctx, 3, "strides", op))


def shape_of(x: torch.Tensor) -> list:
    """A tensor's shape as a python list of sizes (symbolic under tracing, so shape
    arithmetic exports); ops that need a tensor convert it (``shape_tensor``)."""
    return list(x.shape)


def shape_tensor(v, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """A shape value as an integer tensor (for ops that compute with it as data)."""
    return v if isinstance(v, torch.Tensor) else torch.tensor(as_ints(v), dtype=dtype)


@paddle_op("shape", inputs=("Input",))
@paddle_op("pd_op.shape")
def _shape(op: PaddleOp, ctx: Context) -> Op:
    return Op(shape_of, (In(0),))


@paddle_op("pd_op.shape64")
def _shape64(op: PaddleOp, ctx: Context) -> Op:
    return Op(shape_of, (In(0),))


def pad_nd(x: torch.Tensor, pads: list, mode: str, value: float, channels_last: bool
           ) -> torch.Tensor:
    """Paddle pad3d/pad2d: ``pads`` is [left, right, top, bottom(, front, back)]."""
    if channels_last:
        x = x.movedim(-1, 1)
    pads = as_ints(pads)
    if mode == "constant":
        y = F.pad(x, pads, value=value)
    else:
        y = F.pad(x, pads, mode={"edge": "replicate"}.get(mode, mode))
    return y.movedim(1, -1) if channels_last else y


@paddle_op("pad3d", inputs=("X", "Paddings"))
@paddle_op("pd_op.pad3d")
def _pad3d(op: PaddleOp, ctx: Context) -> Op:
    pads = _index_arg(ctx, 1, "paddings", op)
    fmt = str(op.attr("data_format", "NCDHW")).upper()
    return Op(pad_nd, (In(0), pads, str(op.attr("mode", "constant")),
                       float(op.attr("value", op.attr("pad_value", 0.0))), fmt == "NDHWC"))


@paddle_op("pad2d", inputs=("X", "Paddings"))
def _pad2d(op: PaddleOp, ctx: Context) -> Op:
    p = _index_arg(ctx, 1, "paddings", op)  # [top, bottom, left, right]
    if isinstance(p, In):
        raise Unsupported("pad2d with computed paddings")
    fmt = str(op.attr("data_format", "NCHW")).upper()
    return Op(pad_nd, (In(0), [p[2], p[3], p[0], p[1]], str(op.attr("mode", "constant")),
                       float(op.attr("pad_value", 0.0)), fmt == "NHWC"))


def pad_per_dim(x: torch.Tensor, pads: list, value: float) -> torch.Tensor:
    """Paddle ``pad``: ``pads`` is [before0, after0, before1, after1, ...] from the first axis."""
    flat = []
    for k in range(len(pads) // 2 - 1, -1, -1):
        flat += [pads[2 * k], pads[2 * k + 1]]
    return F.pad(x, flat, value=value)


@paddle_op("pad", inputs=("X",))
def _pad(op: PaddleOp, ctx: Context) -> Op:
    return Op(pad_per_dim, (In(0), list(op.attr("paddings")), float(op.attr("pad_value", 0.0))))


@paddle_op("pd_op.pad")
def _pad_pir(op: PaddleOp, ctx: Context) -> Op:
    value = ctx.scalar(1, "pad_value", 0.0) if ctx.has(1) else op.attr("pad_value", 0.0)
    return Op(pad_per_dim, (In(0), list(op.attr("paddings")), float(value)))


def expand(x: torch.Tensor, shape) -> torch.Tensor:
    """Paddle expand_v2: -1 keeps the input's size."""
    dims = as_ints(shape)
    lead = len(dims) - x.dim()
    return x.expand([x.shape[i - lead] if d == -1 else d for i, d in enumerate(dims)])


@paddle_op("expand_v2", inputs=("X", "Shape", "expand_shapes_tensor*"))
def _expand_legacy(op: PaddleOp, ctx: Context) -> Op:
    shape = _shape_arg(ctx, 2, None)
    if shape is None:
        shape = _shape_arg(ctx, 1, list(op.attr("shape", [])))
    return Op(expand, (In(0), shape))


@paddle_op("pd_op.expand")
def _expand(op: PaddleOp, ctx: Context) -> Op:
    return Op(expand, (In(0), _shape_arg(ctx, 1, None)))


def expand_as(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x.expand_as(y)


@paddle_op("expand_as_v2", inputs=("X", "Y"))
@paddle_op("pd_op.expand_as")
def _expand_as(op: PaddleOp, ctx: Context) -> Op:
    return Op(expand_as, (In(0), In(1)))


def tile(x: torch.Tensor, repeats) -> torch.Tensor:
    reps = as_ints(repeats)
    return x.repeat([1] * (x.dim() - len(reps)) + reps)


@paddle_op("tile", inputs=("X", "RepeatTimes", "repeat_times_tensor*"))
def _tile_legacy(op: PaddleOp, ctx: Context) -> Op:
    reps = _shape_arg(ctx, 2, None)
    if reps is None:
        reps = _shape_arg(ctx, 1, list(op.attr("repeat_times", [])))
    return Op(tile, (In(0), reps))


@paddle_op("pd_op.tile")
def _tile(op: PaddleOp, ctx: Context) -> Op:
    return Op(tile, (In(0), _shape_arg(ctx, 1, None)))


def gather(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    """Paddle gather: rows of ``x`` along ``axis`` at a 1-D (or 0-D) ``index``."""
    if isinstance(x, list):
        picked = [x[i] for i in as_ints(index)]
        return picked[0] if index.dim() == 0 else picked
    if index.dim() == 0:
        return x.select(axis, int(index))
    return x.index_select(axis, index.reshape(-1).long())


@paddle_op("gather", inputs=("X", "Index", "Axis"))
@paddle_op("pd_op.gather")
def _gather(op: PaddleOp, ctx: Context) -> Op:
    return Op(gather, (In(0), In(1), int(ctx.scalar(2, "axis", 0))))


def pixel_shuffle(x: torch.Tensor, factor: int, channels_last: bool) -> torch.Tensor:
    if channels_last:
        return F.pixel_shuffle(x.movedim(-1, 1), factor).movedim(1, -1)
    return F.pixel_shuffle(x, factor)


@paddle_op("pixel_shuffle", inputs=("X",))
@paddle_op("pd_op.pixel_shuffle")
def _pixel_shuffle(op: PaddleOp, ctx: Context) -> Op:
    return Op(pixel_shuffle, (In(0), int(op.attr("upscale_factor")),
                              str(op.attr("data_format", "NCHW")).upper() == "NHWC"))


def roll(x: torch.Tensor, shifts: list, axes: list) -> torch.Tensor:
    """Paddle roll; no axes rolls the flattened tensor."""
    if not axes:
        return torch.roll(x.reshape(-1), shifts[0]).reshape(x.shape)
    return torch.roll(x, list(shifts), list(axes))


@paddle_op("roll", inputs=("X", "ShiftsTensor"))
def _roll_legacy(op: PaddleOp, ctx: Context) -> Op:
    shifts = _axes(ctx, 1, op, "shifts")
    return Op(roll, (In(0), shifts, list(op.attr("axis", []))))


@paddle_op("pd_op.roll")
def _roll(op: PaddleOp, ctx: Context) -> Op:
    return Op(roll, (In(0), _axes(ctx, 1, op, "shifts"), list(op.attr("axis", []))))


def index_select(x: torch.Tensor, index: torch.Tensor, axis: int) -> torch.Tensor:
    return x.index_select(axis, index.long())


@paddle_op("index_select", inputs=("X", "Index"), outputs=("Out",))
@paddle_op("pd_op.index_select")
def _index_select(op: PaddleOp, ctx: Context) -> Op:
    return Op(index_select, (In(0), In(1), int(op.attr("dim", op.attr("axis", 0)))))
