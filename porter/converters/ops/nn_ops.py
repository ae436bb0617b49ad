"""Vision layers: Conv, ConvTranspose, normalisations, pooling, GridSample, AffineGrid.

When the weights are constants and the attributes fit, a node becomes the matching torch layer
(``nn.Conv2d``, ``nn.BatchNorm2d``, …) that owns them; otherwise a functional form runs with the
weights as inputs (e.g. asymmetric padding, weights computed in the graph).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from porter.converters.context import Context, In, Node, Op
from porter.converters.params import new_module, weight_tensor
from porter.converters.registry import converter


def same_pads(size: list[int], kernel: list[int], strides: list[int], dilations: list[int],
              lower: bool) -> list[int]:
    """ONNX auto_pad SAME_UPPER / SAME_LOWER pads as [begin..., end...]."""
    begin, end = [], []
    for n, k, s, d in zip(size, kernel, strides, dilations):
        total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
        small, big = total // 2, total - total // 2
        begin.append(big if lower else small)
        end.append(small if lower else big)
    return begin + end


def pad_spec(pads: list[int]) -> list[int]:
    """ONNX [b1, b2, …, e1, e2, …] -> F.pad's last-dim-first pairs."""
    nd = len(pads) // 2
    spec = []
    for i in reversed(range(nd)):
        spec += [pads[i], pads[i + nd]]
    return spec


def conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None, strides=None,
         pads=None, dilations=None, group: int = 1, auto_pad: str = "NOTSET") -> torch.Tensor:
    """ONNX Conv with any padding (asymmetric pads are applied with F.pad first)."""
    nd = w.dim() - 2
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(list(x.shape[2:]), list(w.shape[2:]), strides, dilations,
                         auto_pad == "SAME_LOWER")
    pads = list(pads or [0] * (2 * nd))
    if pads[:nd] != pads[nd:]:
        x = F.pad(x, pad_spec(pads))
        pads = [0] * (2 * nd)
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return fn(x, w, b, strides, pads[:nd], dilations, group)


def _conv_attrs(node: Node, nd: int) -> tuple[list[int], list[int], list[int]]:
    strides = list(node.attr("strides") or [1] * nd)
    dilations = list(node.attr("dilations") or [1] * nd)
    pads = list(node.attr("pads") or [0] * (2 * nd))
    return strides, dilations, pads


@converter("Conv", since=(1, 11, 22))
def _conv(node: Node, ctx: Context) -> Op:
    w, b = ctx.const(1), ctx.const(2)
    auto_pad = node.attr("auto_pad", "NOTSET")
    group = node.attr("group", 1)
    if w is not None and w.dtype.kind == "f" and 3 <= w.ndim <= 5 and (b is not None
                                                                         or not ctx.has(2)):
        nd = w.ndim - 2
        strides, dilations, pads = _conv_attrs(node, nd)
        if auto_pad == "VALID":
            pads = [0] * (2 * nd)
        if auto_pad in ("NOTSET", "VALID") and pads[:nd] == pads[nd:]:
            cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[nd - 1]
            m = new_module(cls, w.shape[1] * group, w.shape[0], tuple(w.shape[2:]), tuple(strides),
                    tuple(pads[:nd]), tuple(dilations), group, bias=b is not None)
            m.weight.data = weight_tensor(w)
            if b is not None:
                m.bias.data = weight_tensor(b)
            return Op(m, (In(0),))
    kw = {"strides": node.attr("strides"), "pads": node.attr("pads"),
          "dilations": node.attr("dilations"), "group": group, "auto_pad": auto_pad}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
    return Op(conv, (In(0), In(1), In(2) if ctx.has(2) else None), kw)


def conv_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None,
                   strides=None, pads=None, dilations=None, group: int = 1,
                   output_padding=None, output_shape=None,
                   auto_pad: str = "NOTSET") -> torch.Tensor:
    """ONNX ConvTranspose: full transposed conv, then crop pads / extend output_padding."""
    nd = w.dim() - 2
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    out_pad = list(output_padding or [0] * nd)
    size = list(x.shape[2:])
    kernel = list(w.shape[2:])
    full = [(n - 1) * s + (k - 1) * d + 1 for n, s, k, d in zip(size, strides, kernel, dilations)]
    if output_shape is not None:
        target = list(output_shape)[-nd:]
        total = [f + op - t for f, op, t in zip(full, out_pad, target)]
        if auto_pad == "SAME_UPPER":
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [n * s for n, s in zip(size, strides)]
        total = [max(f + op - t, 0) for f, op, t in zip(full, out_pad, target)]
        if auto_pad == "SAME_UPPER":
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
    pads = list(pads or [0] * (2 * nd))
    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    y = fn(x, w, None, strides, 0, 0, group, dilations)
    crop = [-p for p in pads[:nd]] + [op - p for p, op in zip(pads[nd:], out_pad)]
    if any(crop):
        y = F.pad(y, pad_spec(crop))
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return y


@converter("ConvTranspose", since=(1, 11, 22))
def _conv_transpose(node: Node, ctx: Context) -> Op:
    w, b = ctx.const(1), ctx.const(2)
    group = node.attr("group", 1)
    auto_pad = node.attr("auto_pad", "NOTSET")
    if (w is not None and w.dtype.kind == "f" and 3 <= w.ndim <= 5
            and (b is not None or not ctx.has(2)) and node.attr("output_shape") is None
            and auto_pad in ("NOTSET", "VALID")):
        nd = w.ndim - 2
        strides, dilations, pads = _conv_attrs(node, nd)
        out_pad = list(node.attr("output_padding") or [0] * nd)
        if auto_pad == "VALID":
            pads = [0] * (2 * nd)
        if pads[:nd] == pads[nd:] and all(op < max(s, d) for op, s, d in
                                          zip(out_pad, strides, dilations)):
            cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[nd - 1]
            m = new_module(cls, w.shape[0], w.shape[1] * group, tuple(w.shape[2:]), tuple(strides),
                    tuple(pads[:nd]), tuple(out_pad), group, b is not None, tuple(dilations))
            m.weight.data = weight_tensor(w)
            if b is not None:
                m.bias.data = weight_tensor(b)
            return Op(m, (In(0),))
    kw = {k: node.attr(k) for k in ("strides", "pads", "dilations", "output_padding",
                                    "output_shape")}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kw.items()}
    kw.update(group=group, auto_pad=auto_pad)
    return Op(conv_transpose, (In(0), In(1), In(2) if ctx.has(2) else None), kw)


def batch_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
               var: torch.Tensor, epsilon: float = 1e-5, momentum: float = 0.9,
               training: int = 0, n_out: int = 1):
    """ONNX BatchNormalization; ``training`` uses batch statistics and updates running ones."""
    if not training:
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)
    dims = [0] + list(range(2, x.dim()))
    bm = x.mean(dims)
    bv = x.var(dims, unbiased=False)
    y = F.batch_norm(x, bm, bv, scale, bias, False, 0.0, epsilon)
    if n_out == 1:
        return y
    return y, mean * momentum + bm * (1 - momentum), var * momentum + bv * (1 - momentum)


@converter("BatchNormalization", since=(1, 6, 7, 9, 14, 15))
def _batch_norm(node: Node, ctx: Context) -> Op:
    eps = node.attr("epsilon", 1e-5)
    training = node.attr("training_mode", 0)
    n_out = len(node.outputs) if training else 1
    consts = [ctx.const(i) for i in range(1, 5)]
    rank = ctx.rank(0)
    if (not training and all(c is not None and c.dtype.kind == "f" and c.ndim == 1
                             for c in consts) and rank in (2, 3, 4, 5) and node.opset >= 6):
        cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
        m = cls(consts[0].shape[0], eps=eps)
        for name, v in zip(("weight", "bias", "running_mean", "running_var"), consts):
            getattr(m, name).data = weight_tensor(v)
        return Op(m.eval(), (In(0),))
    return Op(batch_norm, (In(0), In(1), In(2), In(3), In(4)),
              {"epsilon": eps, "momentum": node.attr("momentum", 0.9), "training": training,
               "n_out": n_out}, n_out=n_out)


def instance_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor,
                  epsilon: float = 1e-5) -> torch.Tensor:
    return F.group_norm(x, x.shape[1], scale, bias, epsilon)


@converter("InstanceNormalization", since=(1, 6, 22))
def _instance_norm(node: Node, ctx: Context) -> Op:
    eps = node.attr("epsilon", 1e-5)
    s, b = ctx.const(1), ctx.const(2)
    rank = ctx.rank(0)
    if s is not None and b is not None and s.dtype.kind == "f" and rank in (3, 4, 5):
        # GroupNorm with one group per channel is InstanceNorm: the same statistics and keys
        # (weight, bias), but one fused CPU kernel (4-5x faster than aten::instance_norm, which
        # loops through batch_norm) and native_group_norm has an NPU kernel.
        m = new_module(nn.GroupNorm, s.shape[0], s.shape[0], eps=eps, affine=True)
        m.weight.data = weight_tensor(s)
        m.bias.data = weight_tensor(b)
        return Op(m, (In(0),))
    return Op(instance_norm, (In(0), In(1), In(2)), {"epsilon": eps})


def layer_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None,
               axis: int = -1, epsilon: float = 1e-5, n_out: int = 1):
    """ONNX LayerNormalization (scale/bias may broadcast); extra outputs: mean, 1/std."""
    axis = axis % x.dim()
    dims = list(range(axis, x.dim()))
    if n_out == 1 and tuple(scale.shape) == tuple(x.shape[axis:]) and (
            bias is None or bias.shape == scale.shape):
        return F.layer_norm(x, tuple(x.shape[axis:]), scale, bias, epsilon)
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    mean = xf.mean(dims, keepdim=True)
    inv = torch.rsqrt(((xf - mean) ** 2).mean(dims, keepdim=True) + epsilon)
    y = (xf - mean) * inv * scale
    if bias is not None:
        y = y + bias
    y = y.to(x.dtype)
    return (y, mean, inv)[:n_out] if n_out > 1 else y


@converter("LayerNormalization", since=(17,))
def _layer_norm(node: Node, ctx: Context) -> Op:
    eps, axis = node.attr("epsilon", 1e-5), node.attr("axis", -1)
    n_out = len(node.outputs)
    s, b = ctx.const(1), ctx.const(2)
    if (n_out == 1 and axis < 0 and s is not None and s.dtype.kind == "f" and s.ndim == -axis
            and (b is None and not ctx.has(2) or b is not None and b.shape == s.shape)):
        m = new_module(nn.LayerNorm, s.shape, eps=eps, bias=b is not None)
        m.weight.data = weight_tensor(s)
        if b is not None:
            m.bias.data = weight_tensor(b)
        return Op(m, (In(0),))
    return Op(layer_norm, (In(0), In(1), In(2) if ctx.has(2) else None),
              {"axis": axis, "epsilon": eps, "n_out": n_out}, n_out=n_out)


def group_norm(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, num_groups: int,
               epsilon: float = 1e-5) -> torch.Tensor:
    """ONNX GroupNormalization; opset 18 has one scale per group, 21 one per channel."""
    c = x.shape[1]
    if scale.numel() == c:
        return F.group_norm(x, num_groups, scale, bias, epsilon)
    y = F.group_norm(x, num_groups, None, None, epsilon)
    rep = c // num_groups
    shape = (1, c) + (1,) * (x.dim() - 2)
    return y * scale.repeat_interleave(rep).reshape(shape) + bias.repeat_interleave(
        rep).reshape(shape)


@converter("GroupNormalization", since=(18, 21))
def _group_norm(node: Node, ctx: Context) -> Op:
    return Op(group_norm, (In(0), In(1), In(2), node.attr("num_groups")),
              {"epsilon": node.attr("epsilon", 1e-5)})


def rms_norm(x: torch.Tensor, scale: torch.Tensor, axis: int = -1,
             epsilon: float = 1e-5) -> torch.Tensor:
    axis = axis % x.dim()
    dims = list(range(axis, x.dim()))
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    y = xf * torch.rsqrt((xf * xf).mean(dims, keepdim=True) + epsilon)
    return (y * scale).to(x.dtype)


@converter("RMSNormalization", since=(23,))
def _rms_norm(node: Node, ctx: Context) -> Op:
    return Op(rms_norm, (In(0), In(1), node.attr("axis", -1), node.attr("epsilon", 1e-5)))


def mean_variance_norm(x: torch.Tensor, axes=(0, 2, 3)) -> torch.Tensor:
    mean = x.mean(list(axes), keepdim=True)
    var = ((x - mean) ** 2).mean(list(axes), keepdim=True)
    return (x - mean) / torch.sqrt(var)


@converter("MeanVarianceNormalization", since=(9, 13))
def _mvn(node: Node, ctx: Context) -> Op:
    return Op(mean_variance_norm, (In(0), tuple(node.attr("axes", [0, 2, 3]))))


def lp_normalize(x: torch.Tensor, axis: int = -1, p: int = 2) -> torch.Tensor:
    norm = torch.linalg.vector_norm(x, ord=p, dim=axis, keepdim=True)
    return torch.where(norm == 0, torch.zeros_like(x), x / norm)


@converter("LpNormalization", since=(1, 22))
def _lp_norm(node: Node, ctx: Context) -> Op:
    return Op(lp_normalize, (In(0), node.attr("axis", -1), node.attr("p", 2)))


@converter("LRN", since=(1, 13))
def _lrn(node: Node, ctx: Context) -> Op:
    return Op(F.local_response_norm, (In(0), node.attr("size")),
              {"alpha": node.attr("alpha", 1e-4), "beta": node.attr("beta", 0.75),
               "k": node.attr("bias", 1.0)})


# ---- pooling ----------------------------------------------------------------------------------

def _pool_geometry(x: torch.Tensor, kernel, strides, pads, dilations, auto_pad, ceil_mode):
    nd = len(kernel)
    strides = list(strides or [1] * nd)
    dilations = list(dilations or [1] * nd)
    size = list(x.shape[2:])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = same_pads(size, list(kernel), strides, dilations, auto_pad == "SAME_LOWER")
    elif auto_pad == "VALID":
        pads = [0] * (2 * nd)
    pads = list(pads or [0] * (2 * nd))
    if ceil_mode:
        # ONNX: a last window that starts beyond input+begin pad is dropped; extend end pads
        extra = []
        for i in range(nd):
            eff = (kernel[i] - 1) * dilations[i] + 1
            span = size[i] + pads[i] + pads[i + nd] - eff
            out = math.ceil(span / strides[i]) + 1
            if (out - 1) * strides[i] >= size[i] + pads[i]:
                out -= 1
            extra.append(max((out - 1) * strides[i] + eff - (size[i] + pads[i] + pads[i + nd]),
                             0))
    else:
        extra = [0] * nd
    return strides, dilations, pads, extra


def max_pool(x: torch.Tensor, kernel_shape, strides=None, pads=None, dilations=None,
             auto_pad: str = "NOTSET", ceil_mode: int = 0, storage_order: int = 0,
             n_out: int = 1):
    """ONNX MaxPool (pads filled with -inf); the optional second output is flat indices."""
    nd = len(kernel_shape)
    strides, dilations, pads, extra = _pool_geometry(x, kernel_shape, strides, pads, dilations,
                                                     auto_pad, ceil_mode)
    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    sym = pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel_shape))
    if n_out == 1 and sym and not any(extra) and x.is_floating_point():
        return fn(x, kernel_shape, strides, pads[:nd], dilations)
    full = pads[:nd] + [p + e for p, e in zip(pads[nd:], extra)]
    low = float("-inf") if x.is_floating_point() else torch.iinfo(x.dtype).min
    xp = F.pad(x.double() if not x.is_floating_point() else x, pad_spec(full), value=low)
    y, idx = fn(xp, kernel_shape, strides, 0, dilations, return_indices=True)
    y = y.to(x.dtype)
    if n_out == 1:
        return y
    # indices into the padded plane -> indices into the unpadded N*C*... tensor
    size = list(x.shape[2:])
    psize = list(xp.shape[2:])
    coords = []
    rem = idx
    for i in reversed(range(nd)):
        coords.insert(0, rem % psize[i] - full[i])
        rem = rem // psize[i]
    if storage_order:
        flat = coords[0]
        for i in range(1, nd):
            flat = flat + coords[i] * math.prod(size[:i])
    else:
        flat = coords[0]
        for i in range(1, nd):
            flat = flat * size[i] + coords[i]
    plane = math.prod(size)
    base = torch.arange(x.shape[0] * x.shape[1]).reshape(x.shape[0], x.shape[1],
                                                         *([1] * nd)) * plane
    return y, (flat + base).long()


@converter("MaxPool", since=(1, 8, 10, 11, 12, 22))
def _max_pool(node: Node, ctx: Context) -> Op:
    n_out = len([o for o in node.outputs if o])
    kw = {k: node.attr(k) for k in ("strides", "pads", "dilations")}
    kw = {k: (tuple(v) if v is not None else None) for k, v in kw.items()}
    return Op(max_pool, (In(0), tuple(node.attr("kernel_shape"))),
              {**kw, "auto_pad": node.attr("auto_pad", "NOTSET"),
               "ceil_mode": node.attr("ceil_mode", 0),
               "storage_order": node.attr("storage_order", 0), "n_out": len(node.outputs)},
              n_out=max(n_out, len(node.outputs)))


def _window_sum(x: torch.Tensor, kernel, strides, dilations) -> torch.Tensor:
    """Sum over each pooling window (x already padded)."""
    nd = len(kernel)
    if all(d == 1 for d in dilations) and nd in (2, 3):
        fn = F.avg_pool2d if nd == 2 else F.avg_pool3d
        return fn(x, kernel, strides, 0, divisor_override=1)
    ones = torch.ones((x.shape[1], 1) + tuple(kernel), dtype=x.dtype)
    fn = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return fn(x, ones, None, strides, 0, dilations, x.shape[1])


def avg_pool(x: torch.Tensor, kernel_shape, strides=None, pads=None, dilations=None,
             auto_pad: str = "NOTSET", ceil_mode: int = 0,
             count_include_pad: int = 0) -> torch.Tensor:
    """ONNX AveragePool as window sums divided by the window's counted elements."""
    nd = len(kernel_shape)
    strides, dilations, pads, extra = _pool_geometry(x, kernel_shape, strides, pads, dilations,
                                                     auto_pad, ceil_mode)
    sym = pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel_shape))
    if sym and not any(extra) and all(d == 1 for d in dilations) and (
            count_include_pad or not any(pads)):
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
        return fn(x, kernel_shape, strides, pads[:nd], False, bool(count_include_pad))
    full = pads[:nd] + [p + e for p, e in zip(pads[nd:], extra)]
    xp = F.pad(x, pad_spec(full))
    ones = torch.ones((1, 1) + tuple(x.shape[2:]), dtype=x.dtype)
    if count_include_pad:
        mask = F.pad(F.pad(ones, pad_spec(pads), value=1.0), pad_spec([0] * nd + extra))
    else:
        mask = F.pad(ones, pad_spec(full))
    s = _window_sum(xp, kernel_shape, strides, dilations)
    c = _window_sum(mask, kernel_shape, strides, dilations)
    return s / c


@converter("AveragePool", since=(1, 7, 10, 11, 19, 22))
def _avg_pool(node: Node, ctx: Context) -> Op:
    kw = {k: node.attr(k) for k in ("strides", "pads", "dilations")}
    kw = {k: (tuple(v) if v is not None else None) for k, v in kw.items()}
    return Op(avg_pool, (In(0), tuple(node.attr("kernel_shape"))),
              {**kw, "auto_pad": node.attr("auto_pad", "NOTSET"),
               "ceil_mode": node.attr("ceil_mode", 0),
               "count_include_pad": node.attr("count_include_pad", 0)})


def lp_pool(x: torch.Tensor, kernel_shape, p: int = 2, strides=None, pads=None,
            dilations=None, auto_pad: str = "NOTSET", ceil_mode: int = 0) -> torch.Tensor:
    nd = len(kernel_shape)
    strides, dilations, pads, extra = _pool_geometry(x, kernel_shape, strides, pads, dilations,
                                                     auto_pad, ceil_mode)
    full = pads[:nd] + [q + e for q, e in zip(pads[nd:], extra)]
    xp = F.pad(torch.abs(x) ** p, pad_spec(full))
    return _window_sum(xp, kernel_shape, strides, dilations) ** (1.0 / p)


@converter("LpPool", since=(1, 2, 11, 18, 22))
def _lp_pool(node: Node, ctx: Context) -> Op:
    kw = {k: node.attr(k) for k in ("strides", "pads", "dilations")}
    kw = {k: (tuple(v) if v is not None else None) for k, v in kw.items()}
    return Op(lp_pool, (In(0), tuple(node.attr("kernel_shape")), node.attr("p", 2)),
              {**kw, "auto_pad": node.attr("auto_pad", "NOTSET"),
               "ceil_mode": node.attr("ceil_mode", 0)})


def global_pool(x: torch.Tensor, kind: str, p: int = 2) -> torch.Tensor:
    dims = list(range(2, x.dim()))
    if kind == "avg":
        return x.mean(dims, keepdim=True)
    if kind == "max":
        return x.amax(dims, keepdim=True)
    return (torch.abs(x) ** p).sum(dims, keepdim=True) ** (1.0 / p)


@converter("GlobalAveragePool", since=(1, 22))
def _gap(node: Node, ctx: Context) -> Op:
    if ctx.rank(0) == 4:
        return Op(F.adaptive_avg_pool2d, (In(0), 1))
    return Op(global_pool, (In(0), "avg"))


@converter("GlobalMaxPool", since=(1, 22))
def _gmp(node: Node, ctx: Context) -> Op:
    return Op(global_pool, (In(0), "max"))


@converter("GlobalLpPool", since=(1, 2, 22))
def _glp(node: Node, ctx: Context) -> Op:
    return Op(global_pool, (In(0), "lp", node.attr("p", 2)))


# ---- sampling ---------------------------------------------------------------------------------

def grid_sample(x: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear",
                padding_mode: str = "zeros", align_corners: int = 0) -> torch.Tensor:
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(mode, mode)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode,
                         align_corners=bool(align_corners))


@converter("GridSample", since=(16, 20, 22))
def _grid_sample(node: Node, ctx: Context) -> Op:
    return Op(grid_sample, (In(0), In(1)), {
        "mode": node.attr("mode", "linear" if node.opset >= 20 else "bilinear"),
        "padding_mode": node.attr("padding_mode", "zeros"),
        "align_corners": node.attr("align_corners", 0)})


def affine_grid(theta: torch.Tensor, size, align_corners: int = 0) -> torch.Tensor:
    size = [int(v) for v in size.reshape(-1).tolist()] if isinstance(size, torch.Tensor) else size
    return F.affine_grid(theta, list(size), align_corners=bool(align_corners))


@converter("AffineGrid", since=(20,))
def _affine_grid(node: Node, ctx: Context) -> Op:
    return Op(affine_grid, (In(0), In(1)), {"align_corners": node.attr("align_corners", 0)})
