"""Shape and layout ops: Shape, Reshape, Slice, Concat, Split, Pad, Expand, Tile, Range …

Shapes computed from ``Shape`` stay tensors at runtime, so dynamic batch / H / W keep working.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from porter.converters.context import Context, In, Node, Op
from porter.converters.ops.elementwise import onnx_dtype
from porter.converters.registry import converter


def as_ints(v) -> list[int]:
    """A shape-like input (tensor, list, tuple or int) as a list of python ints.

    ``torch.SymInt`` entries (symbolic sizes under ``torch.export``) stay symbolic.
    """
    if isinstance(v, torch.Tensor):
        return [int(x) for x in v.reshape(-1).tolist()]
    if isinstance(v, (int, torch.SymInt)):
        return [v]
    return [x if isinstance(x, torch.SymInt) else int(x) for x in v]


def _const_or_in(ctx: Context, i: int):
    v = ctx.ints(i)
    return tuple(v) if v is not None else In(i)


@converter("Constant", since=(1, 9, 11, 12, 13, 19, 21, 23, 24, 25))
def _constant(node: Node, ctx: Context) -> Op:
    (key, value), = node.attrs.items()
    if key in ("value_float", "value_int"):
        value = np.array(value, dtype=np.float32 if key == "value_float" else np.int64)
    elif key in ("value_floats", "value_ints"):
        value = np.array(value, dtype=np.float32 if key == "value_floats" else np.int64)
    elif key.startswith("value_string"):
        from porter.errors import UnsupportedOpError

        raise UnsupportedOpError("Constant (string)", node.opset)
    return Op(constant, (), {"value": torch.from_numpy(np.array(value))})


def constant(value: torch.Tensor) -> torch.Tensor:
    return value


def shape(x: torch.Tensor, start: int = 0, end: int | None = None) -> torch.Tensor:
    return torch._shape_as_tensor(x)[start:end]


@converter("Shape", since=(1, 13, 15, 19, 21, 23, 24, 25))
def _shape(node: Node, ctx: Context) -> Op:
    start, end = node.attr("start", 0), node.attr("end")
    if start == 0 and end is None:
        return Op(torch._shape_as_tensor, (In(0),))
    return Op(shape, (In(0), start, end))


def size(x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64)


@converter("Size", since=(1, 13, 19, 21, 23, 24, 25))
def _size(node: Node, ctx: Context) -> Op:
    return Op(size, (In(0),))


def reshape(x: torch.Tensor, shape, allowzero: int = 0) -> torch.Tensor:
    dims = as_ints(shape)
    if not allowzero:
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


@converter("Reshape", since=(1, 5, 13, 14, 19, 21, 23, 24, 25))
def _reshape(node: Node, ctx: Context) -> Op:
    if node.opset < 5:
        return Op(reshape, (In(0), tuple(node.attr("shape"))))
    return Op(reshape, (In(0), _const_or_in(ctx, 1)), {"allowzero": node.attr("allowzero", 0)})


def flatten(x: torch.Tensor, axis: int = 1) -> torch.Tensor:
    axis = axis % x.dim() if axis < 0 else axis
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return x.reshape(lead, -1) if x.numel() else x.reshape(lead, int(math.prod(x.shape[axis:])))


@converter("Flatten", since=(1, 9, 11, 13, 21, 23, 24, 25))
def _flatten(node: Node, ctx: Context) -> Op:
    return Op(flatten, (In(0), node.attr("axis", 1)))


def squeeze(x: torch.Tensor, axes=None) -> torch.Tensor:
    if axes is None:
        return torch.squeeze(x)
    axes = [a % x.dim() for a in as_ints(axes)]
    return x.reshape([d for i, d in enumerate(x.shape) if i not in axes])


def unsqueeze(x: torch.Tensor, axes) -> torch.Tensor:
    axes = as_ints(axes)
    rank = x.dim() + len(axes)
    axes = sorted(a % rank for a in axes)
    dims = list(x.shape)
    for a in axes:
        dims.insert(a, 1)
    return x.reshape(dims)


@converter("Squeeze", since=(1, 11, 13, 21, 23, 24, 25))
def _squeeze(node: Node, ctx: Context) -> Op:
    if node.opset < 13:
        axes = node.attr("axes")
        return Op(squeeze, (In(0), tuple(axes) if axes is not None else None))
    return Op(squeeze, (In(0), _const_or_in(ctx, 1) if ctx.has(1) else None))


@converter("Unsqueeze", since=(1, 11, 13, 21, 23, 24, 25))
def _unsqueeze(node: Node, ctx: Context) -> Op:
    if node.opset < 13:
        return Op(unsqueeze, (In(0), tuple(node.attr("axes"))))
    return Op(unsqueeze, (In(0), _const_or_in(ctx, 1)))


def transpose(x: torch.Tensor, perm=None) -> torch.Tensor:
    return x.permute(perm if perm is not None else tuple(reversed(range(x.dim()))))


@converter("Transpose", since=(1, 13, 21, 23, 24, 25))
def _transpose(node: Node, ctx: Context) -> Op:
    perm = node.attr("perm")
    return Op(transpose, (In(0), tuple(perm) if perm is not None else None))


def concat(axis: int, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, dim=axis)


@converter("Concat", since=(1, 4, 11, 13))
def _concat(node: Node, ctx: Context) -> Op:
    n = len(node.inputs)
    return Op(concat, (node.attr("axis", 1), *(In(i) for i in range(n))))


def split(x: torch.Tensor, sizes, axis: int = 0, num_outputs: int | None = None) -> tuple:
    if sizes is None:
        n = x.shape[axis]
        chunk = -(-n // num_outputs)
        sizes = [min(chunk, n - k * chunk) for k in range(num_outputs)]
    return torch.split(x, as_ints(sizes), dim=axis)


@converter("Split", since=(1, 2, 11, 13, 18))
def _split(node: Node, ctx: Context) -> Op:
    n = len(node.outputs)
    axis = node.attr("axis", 0)
    if node.opset < 13 and node.attr("split") is not None:
        sizes = tuple(node.attr("split"))
    elif node.opset >= 13 and ctx.has(1):
        sizes = _const_or_in(ctx, 1)
    else:
        sizes = None
    return Op(split, (In(0), sizes, axis, node.attr("num_outputs", n)), n_out=n)


def slice_(x: torch.Tensor, starts, ends, axes=None, steps=None) -> torch.Tensor:
    starts, ends = as_ints(starts), as_ints(ends)
    axes = list(range(len(starts))) if axes is None else as_ints(axes)
    steps = [1] * len(starts) if steps is None else as_ints(steps)
    index = [slice(None)] * x.dim()
    flips = []
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = a % x.dim()
        n = x.shape[a]
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            index[a] = slice(min(max(s, 0), n), min(max(e, 0), n), st)
        else:
            s, e = min(max(s, -1), n - 1), min(max(e, -1), n - 1)
            flips.append(a)  # index i of the flipped axis is n - 1 - i
            index[a] = slice(n - 1 - s, max(n - 1 - e, n - 1 - s), -st)
    if flips:
        x = x.flip(flips)
    return x[tuple(index)]


@converter("Slice", since=(1, 10, 11, 13))
def _slice(node: Node, ctx: Context) -> Op:
    if node.opset < 10:
        axes = node.attr("axes")
        return Op(slice_, (In(0), tuple(node.attr("starts")), tuple(node.attr("ends")),
                           tuple(axes) if axes is not None else None))
    args = [In(0)] + [_const_or_in(ctx, i) if ctx.has(i) else None for i in (1, 2, 3, 4)]
    return Op(slice_, tuple(args))


def expand(x: torch.Tensor, shape) -> torch.Tensor:
    dims = as_ints(shape)
    rank = max(len(dims), x.dim())
    dims = [1] * (rank - len(dims)) + dims
    xs = [1] * (rank - x.dim()) + list(x.shape)
    return x.reshape(xs).expand([b if a == 1 else a for a, b in zip(xs, dims)])


@converter("Expand", since=(8, 13))
def _expand(node: Node, ctx: Context) -> Op:
    return Op(expand, (In(0), _const_or_in(ctx, 1)))


def tile(x: torch.Tensor, repeats) -> torch.Tensor:
    return x.repeat(as_ints(repeats))


@converter("Tile", since=(1, 6, 13))
def _tile(node: Node, ctx: Context) -> Op:
    return Op(tile, (In(0), _const_or_in(ctx, 1)))


def constant_of_shape(shape, value: torch.Tensor) -> torch.Tensor:
    return torch.full(as_ints(shape), value.reshape(()).item(), dtype=value.dtype)


@converter("ConstantOfShape", since=(9, 20, 21, 23, 24, 25))
def _constant_of_shape(node: Node, ctx: Context) -> Op:
    value = node.attr("value")
    value = torch.zeros(1) if value is None else torch.from_numpy(np.array(value))
    return Op(constant_of_shape, (In(0),), {"value": value})


def range_(start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    dtype = start.dtype
    n = max(int(torch.ceil((limit.double() - start.double()) / delta.double()).item()), 0)
    return (start + torch.arange(n, dtype=torch.float64 if dtype.is_floating_point
                                 else torch.int64).to(dtype) * delta).to(dtype)


@converter("Range", since=(11, 27))
def _range(node: Node, ctx: Context) -> Op:
    return Op(range_, (In(0), In(1), In(2)))


def pad(x: torch.Tensor, pads, mode: str = "constant", value=None, axes=None) -> torch.Tensor:
    pads = as_ints(pads)
    rank = x.dim()
    axes = list(range(rank)) if axes is None else [a % rank for a in as_ints(axes)]
    n = len(axes)
    begin, end = [0] * rank, [0] * rank
    for k, a in enumerate(axes):
        begin[a], end[a] = pads[k], pads[k + n]
    if isinstance(value, torch.Tensor):
        value = value.reshape(-1)[0].item() if value.numel() else 0
    # crop negative pads first, then pad with F.pad (last axis first)
    if any(p < 0 for p in begin + end):
        x = x[tuple(slice(-b if b < 0 else 0, x.shape[i] + e if e < 0 else None)
                    for i, (b, e) in enumerate(zip(begin, end)))]
        begin, end = [max(b, 0) for b in begin], [max(e, 0) for e in end]
    spec = []
    for a in reversed(range(rank)):
        spec += [begin[a], end[a]]
    while len(spec) > 2 and spec[-1] == 0 and spec[-2] == 0:
        spec = spec[:-2]
    if mode == "constant":
        return F.pad(x, spec, value=float(value or 0))
    for a in range(rank):  # edge / reflect / wrap: gather along each padded axis
        if begin[a] or end[a]:
            n = x.shape[a]
            idx = torch.arange(-begin[a], n + end[a])
            if mode == "edge":
                idx = idx.clamp(0, n - 1)
            elif mode == "wrap":
                idx = idx % n
            else:
                m = idx % (2 * n - 2) if n > 1 else idx * 0
                idx = torch.where(m >= n, 2 * n - 2 - m, m)
            x = torch.index_select(x, a, idx)
    return x


@converter("Pad", since=(1, 2, 11, 13, 18, 19, 21, 23, 24, 25))
def _pad(node: Node, ctx: Context) -> Op:
    mode = node.attr("mode", "constant")
    if node.opset < 11:
        return Op(pad, (In(0), tuple(node.attr("pads") or node.attr("paddings")), mode,
                        node.attr("value", 0.0)))
    value = None
    if ctx.has(2):
        v = ctx.const(2)
        value = In(2) if v is None else (v.reshape(-1)[0].item() if v.size else None)
    axes = _const_or_in(ctx, 3) if ctx.has(3) else None
    return Op(pad, (In(0), _const_or_in(ctx, 1), mode, value, axes))


def depth_to_space(x: torch.Tensor, blocksize: int, mode: str = "DCR") -> torch.Tensor:
    n, c, h, w = x.shape
    b = blocksize
    if mode == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).permute(0, 1, 4, 2, 5, 3)
    return y.reshape(n, c // (b * b), h * b, w * b)


def space_to_depth(x: torch.Tensor, blocksize: int, mode: str = "DCR") -> torch.Tensor:
    n, c, h, w = x.shape
    b = blocksize
    y = x.reshape(n, c, h // b, b, w // b, b)
    y = y.permute(0, 3, 5, 1, 2, 4) if mode == "DCR" else y.permute(0, 1, 3, 5, 2, 4)
    return y.reshape(n, c * b * b, h // b, w // b)


@converter("DepthToSpace", since=(1, 11, 13, 28))
def _d2s(node: Node, ctx: Context) -> Op:
    return Op(depth_to_space, (In(0), node.attr("blocksize"), node.attr("mode", "DCR")))


@converter("SpaceToDepth", since=(1, 13, 28))
def _s2d(node: Node, ctx: Context) -> Op:
    return Op(space_to_depth, (In(0), node.attr("blocksize"), node.attr("mode", "DCR")))


def eye_like(x: torch.Tensor, k: int = 0, dtype: torch.dtype | None = None) -> torch.Tensor:
    n, m = x.shape
    out = torch.zeros(n, m, dtype=dtype or x.dtype)
    idx = torch.arange(max(0, -k), min(n, m - k))
    if idx.numel():
        out[idx, idx + k] = 1
    return out


@converter("EyeLike", since=(9, 22))
def _eye_like(node: Node, ctx: Context) -> Op:
    dt = node.attr("dtype")
    return Op(eye_like, (In(0), node.attr("k", 0), onnx_dtype(dt) if dt is not None else None))


def trilu(x: torch.Tensor, k=0, upper: int = 1) -> torch.Tensor:
    k = as_ints(k)[0] if not isinstance(k, int) else k
    return torch.triu(x, k) if upper else torch.tril(x, k)


@converter("Trilu", since=(14,))
def _trilu(node: Node, ctx: Context) -> Op:
    k = (ctx.ints(1)[0] if ctx.is_const(1) else In(1)) if ctx.has(1) else 0
    return Op(trilu, (In(0), k, node.attr("upper", 1)))


def dropout(x: torch.Tensor, *rest, n_out: int = 1):
    if n_out == 1:
        return x
    return x, torch.ones_like(x, dtype=torch.bool)


@converter("Dropout", since=(1, 6, 7, 10, 12, 13, 22))
def _dropout(node: Node, ctx: Context) -> Op:
    n = len([o for o in node.outputs])
    return Op(dropout, (In(0),), {"n_out": n}, n_out=n)
