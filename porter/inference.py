"""CPU inference fast path for the modules porter loads (clean graphs and generated model.py).

:func:`optimize_for_inference` leaves a module's parameters, buffers, state-dict keys and class
alone and gives the instance a ``forward`` that, for eval-mode CPU float inference without
autograd, tracing or compilation, runs an optimised copy of its graph instead:

* BatchNorm folded into the convolution before it (also a BatchNorm on a channel slice of a
  convolution's output, as IBNorm does), so the normalisation costs nothing;
* a channel concatenation of slices of one dying tensor, some of them normalised, written back
  into that tensor instead of copied into a new one;
* activations and residual additions done in place on the fresh output that feeds them;
* the generic converter's CPU kernels (``porter.converters.kernels``): 1x1 convolutions as one
  GEMM, bilinear x2 upsampling as separable lerps, odd-channel concatenations read only by a
  convolution convolved part by part.

The copy is built with ``torch.fx`` on the first such call and rebuilt when any parameter or
buffer changes (``load_state_dict``, in-place updates, ``.to()``); a graph fx cannot trace just
runs as written. Training, ``torch.export``, ``torch.jit.trace``, the NPU audit and any other
device see the plain module. The folded weights are a second copy of the folded convolutions'
weights, made at that first call.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from porter import channels_last
from porter.converters import kernels
from porter.converters.reuse import OutputBuffers, inference_fast_paths

__all__ = ["build_fast_graph", "fast_graph", "is_optimized", "optimize_for_inference",
           "plain_forward"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The ops the optimised graph calls
# ---------------------------------------------------------------------------------------------
def conv2d(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, stride: Any, padding: Any,
           dilation: Any, groups: int, activation: str | None = None) -> torch.Tensor:
    """``activation(F.conv2d(...))``: oneDNN with the activation fused for a channels-last
    input, else a GEMM kernel for 1x1 convolutions that fit one (row-major, or a channel slice
    of a channels-last tensor), else F.conv2d; an unfused activation then runs in place."""
    y = kernels.onednn_conv(x, w, b, stride, padding, dilation, groups, activation)
    if y is not None:
        return y
    if (groups == 1 and w.shape[2:] == (1, 1) and tuple(stride) == (1, 1)
            and tuple(dilation) == (1, 1) and padding in ((0, 0), "valid")):
        y = (kernels.pointwise_conv_channels_last(x, w, b) if kernels.is_channels_last(x)
             else kernels.pointwise_conv(x, w, b))
    if y is None:
        y = F.conv2d(x, w, b, stride, padding, dilation, groups)
    return kernels.ACTIVATIONS[activation][2](y) if activation else y


def conv2d_parts(parts: tuple, w: torch.Tensor, b: torch.Tensor | None, stride: Any,
                 padding: Any, dilation: Any, groups: int) -> torch.Tensor:
    """``conv2d(cat(parts, 1), ...)``, convolving the parts apart when that is faster."""
    if groups == 1 and kernels.worth_splitting(parts):
        y = kernels.conv_parts(parts, w, b, stride, padding, dilation)
        if y is not None:
            return y
    return conv2d(torch.cat(parts, dim=1), w, b, stride, padding, dilation, groups)


def resize_bilinear2x(x: torch.Tensor, buffers: OutputBuffers | None = None, slot: int = 0
                      ) -> torch.Tensor:
    """Half-pixel bilinear upsampling by exactly 2: porter's lerp kernel for row-major input,
    aten's channels-last kernel for channels-last input (into the op's kept output buffer
    when ``buffers`` has a free one), else F.interpolate."""
    if kernels.is_channels_last(x) and x.dim() == 4 and x.is_floating_point():
        size = (x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3])
        out = buffers.take(slot, torch.Size(size), x.dtype) if buffers is not None else None
        if out is None:
            out = torch.empty(size, dtype=x.dtype, memory_format=torch.channels_last)
        # output size 2x and no scales: the same source coordinates as scale_factor=2.0
        y = torch._C._nn.upsample_bilinear2d(x, list(size[2:]), False, None, None, out=out)
        return buffers.keep(slot, y) if buffers is not None else y
    y = kernels.upsample_bilinear2x(x)
    if y is not None:
        return y
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def write_back(x: torch.Tensor, starts: tuple[int, ...], *parts: torch.Tensor | None
               ) -> torch.Tensor:
    """``cat`` of consecutive channel slices of ``x`` (from ``starts``), some replaced by a
    computed same-shape tensor (None keeps the slice): the computed ones are copied into ``x``,
    which nothing else reads any more, and ``x`` is the result."""
    bounds = (*starts[1:], x.shape[1])
    for start, stop, part in zip(starts, bounds, parts):
        if part is not None:
            x[:, start:stop].copy_(part)
    return x


def add_into(fresh: torch.Tensor, other: Any) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` (which nothing else reads) when shapes allow."""
    if (type(other) is torch.Tensor and other.shape == fresh.shape
            and other.dtype == fresh.dtype):
        return fresh.add_(other)
    return fresh + other


def _relu6_(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh_(x, 0.0, 6.0)


_INPLACE: dict[Any, Callable[[torch.Tensor], torch.Tensor]] = {
    torch.relu: torch.relu_, F.relu: torch.relu_, F.relu6: _relu6_, torch.sigmoid: torch.sigmoid_,
    torch.tanh: torch.tanh_, nn.ReLU: torch.relu_, nn.ReLU6: _relu6_, nn.Sigmoid: torch.sigmoid_,
    nn.Tanh: torch.tanh_,
}
#: ops whose output is a new tensor, never a view of an input
_NEW = {conv2d, conv2d_parts, resize_bilinear2x, torch.cat, F.group_norm, channels_last.group_norm,
        F.batch_norm,
        F.interpolate, operator.add, operator.mul, torch.add, torch.mul}
#: ops that return their first input (written in place): new only when that input was
_SAME = {write_back, add_into, *set(_INPLACE.values())}


# ---------------------------------------------------------------------------------------------
# Recognising the same op in a clean graph and in generated source
# ---------------------------------------------------------------------------------------------
def _same_code(fn: Any, ref: Callable) -> bool:
    """Whether ``fn`` is ``ref`` or a verbatim copy of it (generated model.py copies porter's op
    helpers, so identity cannot tell; identical bytecode and constants can)."""
    if fn is ref:
        return True
    code, rc = getattr(fn, "__code__", None), ref.__code__
    return (code is not None and code.co_code == rc.co_code and code.co_consts == rc.co_consts
            and code.co_names == rc.co_names and fn.__defaults__ == ref.__defaults__)


def _porter_ops() -> dict[str, Callable]:
    from porter.converters.ops import nn_ops, resize, shape

    return {"batch_norm": nn_ops.batch_norm, "instance_norm": nn_ops.instance_norm,
            "interpolate": resize.interpolate, "slice_": shape.slice_, "concat": shape.concat}


class _Ops:
    """Matches fx nodes against the ops the passes rewrite."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.mods = dict(gm.named_modules())
        self.gm = gm
        self.porter = _porter_ops()

    def module(self, n: fx.Node) -> nn.Module | None:
        return self.mods.get(n.target) if n.op == "call_module" else None

    def is_porter(self, n: fx.Node, name: str) -> bool:
        return n.op == "call_function" and _same_code(n.target, self.porter[name])

    def attr(self, n: Any) -> torch.Tensor | None:
        """The tensor a get_attr node reads, else None."""
        if not isinstance(n, fx.Node) or n.op != "get_attr":
            return None
        obj: Any = self.gm
        for part in n.target.split("."):
            obj = getattr(obj, part, None)
        return obj if isinstance(obj, torch.Tensor) else None

    def channel_slice(self, n: fx.Node) -> tuple[fx.Node, int, int | None] | None:
        """``x[:, a:b]`` (getitem or generated slice_) as (x, a, b); b None for "to the end"."""
        if n.op != "call_function":
            return None
        if n.target is operator.getitem and len(n.args) == 2:
            x, idx = n.args
            if (isinstance(idx, tuple) and len(idx) == 2 and idx[0] == slice(None)
                    and isinstance(idx[1], slice) and idx[1].step in (None, 1)):
                a, b = idx[1].start or 0, idx[1].stop
                if isinstance(a, int) and a >= 0 and (b is None or isinstance(b, int) and b > a):
                    return x, a, b
            return None
        if self.is_porter(n, "slice_") and len(n.args) == 5 and not n.kwargs:
            x, starts, ends, axes, steps = n.args
            if (tuple(axes) == (1,) and tuple(steps) == (1,) and len(starts) == 1
                    and isinstance(starts[0], int) and starts[0] >= 0
                    and isinstance(ends[0], int) and ends[0] > starts[0]):
                return x, starts[0], None if ends[0] >= 2**62 else ends[0]
        return None

    def batch_norm(self, n: fx.Node) -> tuple[fx.Node, torch.Tensor, torch.Tensor] | None:
        """An eval-mode BatchNorm as (input, scale, shift) per channel."""
        m = self.module(n)
        if isinstance(m, nn.BatchNorm2d) and type(m).forward is nn.BatchNorm2d.forward:
            if m.training or m.running_mean is None or len(n.args) != 1:
                return None
            mean, var, w, b, eps = m.running_mean, m.running_var, m.weight, m.bias, m.eps
        elif self.is_porter(n, "batch_norm") and len(n.args) == 5:
            kw = {"epsilon": 1e-5, "training": 0, "n_out": 1, **n.kwargs}
            if kw["training"] or kw["n_out"] != 1 or set(kw) - {"epsilon", "training", "n_out",
                                                             "momentum"}:
                return None
            w, b, mean, var = (self.attr(a) for a in n.args[1:])
            eps = kw["epsilon"]
            if mean is None or var is None or not isinstance(eps, float):
                return None
        else:
            return None
        with torch.no_grad():
            scale = torch.rsqrt(var.double() + eps)
            if w is not None:
                scale = scale * w.double()
            shift = -mean.double() * scale + (b.double() if b is not None else 0.0)
        return n.args[0], scale, shift

    def cat_parts(self, n: fx.Node) -> list | None:
        """The parts of a channel concatenation (torch.cat or generated concat), else None."""
        if n.op != "call_function":
            return None
        if n.target is torch.cat:
            xs = n.args[0] if n.args else n.kwargs.get("tensors")
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
            return list(xs) if dim == 1 and isinstance(xs, (list, tuple)) else None
        if self.is_porter(n, "concat") and n.args and n.args[0] == 1 and not n.kwargs:
            return list(n.args[1:])
        return None

    def activation(self, n: fx.Node) -> Callable | None:
        """The in-place form of a unary activation node, else None."""
        m = self.module(n)
        if m is not None:
            fn = _INPLACE.get(type(m))
            return fn if fn is not None and len(n.args) == 1 and not getattr(m, "inplace",
                                                                             False) else None
        if n.op != "call_function" or len(n.args) != 1 or n.kwargs not in ({}, {"inplace": False}):
            return None
        try:
            return _INPLACE.get(n.target)
        except TypeError:  # unhashable target
            return None

    def bilinear2x(self, n: fx.Node) -> bool:
        if n.op != "call_function" or not n.args:
            return False
        if n.target is F.interpolate:
            kw = dict(n.kwargs)
            scale = kw.pop("scale_factor", n.args[2] if len(n.args) > 2 else None)
            if len(n.args) > 3 or (len(n.args) > 1 and n.args[1] is not None) or kw.pop(
                    "size", None) is not None:
                return False
            ok = (kw.pop("mode", None) == "bilinear" and kw.pop("align_corners", None) is False
                  and kw.pop("recompute_scale_factor", None) in (None, False)
                  and kw.pop("antialias", False) is False and not kw)
            return ok and scale in (2, 2.0, (2, 2), (2.0, 2.0), [2.0, 2.0])
        if self.is_porter(n, "interpolate") and len(n.args) == 2:
            kw = n.kwargs
            return (tuple(n.args[1]) == (2.0, 2.0) and kw.get("mode") == "bilinear"
                    and kw.get("align_corners") is False
                    and set(kw) <= {"mode", "align_corners", "pytorch_half_pixel"})
        return False


# ---------------------------------------------------------------------------------------------
# Passes
# ---------------------------------------------------------------------------------------------
class _Builder:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm, self.g = gm, gm.graph
        self.ops = _Ops(gm)
        self.weights: dict[fx.Node, list] = {}  # conv node -> [weight, bias, folded already]
        self.count = 0

    def tensor_attr(self, t: torch.Tensor, before: fx.Node) -> fx.Node:
        name = f"_porter_folded_{self.count}"
        self.count += 1
        self.gm.register_buffer(name, t, persistent=False)
        with self.g.inserting_before(before):
            return self.g.get_attr(name)

    def convs(self) -> None:
        """nn.Conv2d calls -> conv2d(x, weight, bias, ...), with the weights as get_attr."""
        for n in list(self.g.nodes):
            m = self.ops.module(n)
            if (not isinstance(m, nn.Conv2d) or type(m).forward is not nn.Conv2d.forward
                    or m.padding_mode != "zeros" or len(n.args) != 1 or n.kwargs):
                continue
            with self.g.inserting_before(n):
                w = self.g.get_attr(f"{n.target}.weight")
                b = self.g.get_attr(f"{n.target}.bias") if m.bias is not None else None
                new = self.g.call_function(conv2d, (n.args[0], w, b, tuple(m.stride), m.padding
                                                    if isinstance(m.padding, str)
                                                    else tuple(m.padding), tuple(m.dilation),
                                                    m.groups))
            n.replace_all_uses_with(new)
            self.g.erase_node(n)
            self.weights[new] = [m.weight.detach(), None if m.bias is None else m.bias.detach(),
                                 False]

    def fold_batch_norms(self) -> None:
        """A BatchNorm on a convolution's output, or on a channel slice of it that no other
        reader overlaps, becomes part of the convolution's weights."""
        for n in list(self.g.nodes):
            bn = self.ops.batch_norm(n)
            if bn is None:
                continue
            x, scale, shift = bn
            conv, lo, hi = x, 0, None
            sl = self.ops.channel_slice(x) if isinstance(x, fx.Node) else None
            if sl is not None:
                conv, lo, hi = sl
            if conv not in self.weights:
                continue
            if sl is None and len(conv.users) != 1:
                continue
            if sl is not None and (len(x.users) != 1 or not self._disjoint_slices(conv)):
                continue
            w, b, folded = self.weights[conv]
            cout = w.shape[0]
            hi = cout if hi is None else min(hi, cout)
            if hi - lo != scale.numel():
                continue
            with torch.no_grad():
                if not folded:  # the module's own weights stay as they are
                    w = w.clone()
                    b = torch.zeros(cout, dtype=w.dtype) if b is None else b.clone()
                # one rounding: the product in float64, as the shift below
                w[lo:hi] = (w[lo:hi].double() * scale.view(-1, *(1,) * (w.dim() - 1))).to(w.dtype)
                b[lo:hi] = (b[lo:hi].double() * scale + shift).to(b.dtype)
            if not folded:
                self._set_weights(conv, w, b)
            self.weights[conv] = [w, b, True]
            n.replace_all_uses_with(x)
            self.g.erase_node(n)

    def _set_weights(self, conv: fx.Node, w: torch.Tensor, b: torch.Tensor) -> None:
        """Point ``conv`` at its folded copies (the originals' get_attr nodes die)."""
        old = conv.args[1:3]
        conv.args = (conv.args[0], self.tensor_attr(w, conv), self.tensor_attr(b, conv),
                     *conv.args[3:])
        for o in old:
            if isinstance(o, fx.Node) and not o.users:
                self.g.erase_node(o)

    def _disjoint_slices(self, x: fx.Node) -> bool:
        spans = []
        for u in x.users:
            sl = self.ops.channel_slice(u)
            if sl is None or sl[0] is not x:
                return False
            spans.append((sl[1], sl[2] if sl[2] is not None else 1 << 62))
        spans.sort()
        return all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))

    def instance_norms(self) -> None:
        """Non-affine nn.InstanceNorm2d without running stats, nn.GroupNorm and generated
        source's instance_norm -> one group_norm (F.group_norm, exact on channels-last too)."""
        for n in list(self.g.nodes):
            m = self.ops.module(n)
            args = None
            if (type(m) is nn.InstanceNorm2d and not m.affine and not m.track_running_stats
                    and len(n.args) == 1 and not n.kwargs):
                args = (n.args[0], m.num_features, None, None, m.eps)
            elif type(m) is nn.GroupNorm and len(n.args) == 1 and not n.kwargs:
                with self.g.inserting_before(n):
                    w = self.g.get_attr(f"{n.target}.weight") if m.weight is not None else None
                    b = self.g.get_attr(f"{n.target}.bias") if m.bias is not None else None
                args = (n.args[0], m.num_groups, w, b, m.eps)
            elif self.ops.is_porter(n, "instance_norm") and len(n.args) == 3 and set(
                    n.kwargs) <= {"epsilon"}:
                scale = self.ops.attr(n.args[1])
                if scale is not None and scale.dim() == 1:
                    args = (n.args[0], scale.numel(), n.args[1], n.args[2],
                            n.kwargs.get("epsilon", 1e-5))
            if args is None:
                continue
            with self.g.inserting_before(n):
                new = self.g.call_function(channels_last.group_norm, args)
            n.replace_all_uses_with(new)
            self.g.erase_node(n)

    def manual_instance_norms(self) -> None:
        """porter's NPU-safe ManualInstanceNorm (a substitute, kept whole by the tracer) -> one
        F.group_norm with a group per channel: the same function, as one CPU kernel."""
        from porter.substitutes.instance_norm import _ManualInstanceNorm

        for n in list(self.g.nodes):
            m = self.ops.module(n)
            if not isinstance(m, _ManualInstanceNorm) or len(n.args) != 1 or n.kwargs:
                continue
            with self.g.inserting_before(n):
                w = self.g.get_attr(f"{n.target}.weight") if m.weight is not None else None
                b = self.g.get_attr(f"{n.target}.bias") if m.bias is not None else None
                new = self.g.call_function(channels_last.group_norm, (n.args[0], m.num_features,
                                                                      w, b, m.eps))
            n.replace_all_uses_with(new)
            self.g.erase_node(n)

    def fresh(self, n: Any) -> bool:
        """A node whose value is a new tensor that only its users can see."""
        while True:
            if not isinstance(n, fx.Node) or n.op != "call_function" or "out" in n.kwargs:
                return False
            try:
                if n.target in _NEW or n.target in _INPLACE and not n.kwargs.get("inplace"):
                    return True
                if n.target not in _SAME or not n.args:
                    return False
            except TypeError:  # unhashable target
                return False
            n = n.args[0]

    def write_backs(self) -> None:
        """cat(x[:, :a], f(x[:, a:]), ...) over all of a dying fresh x -> written into x."""
        for n in list(self.g.nodes):
            parts = self.ops.cat_parts(n)
            if not parts or len(parts) < 2:
                continue
            base, starts, computed, ok = None, [], [], True
            for p in parts:
                sl = self.ops.channel_slice(p) if isinstance(p, fx.Node) else None
                inner = None
                if sl is None and isinstance(p, fx.Node) and self._same_shape_op(p):
                    inner = p.args[0]
                    sl = self.ops.channel_slice(inner) if isinstance(inner, fx.Node) else None
                if sl is None or (base is not None and sl[0] is not base):
                    ok = False
                    break
                base = sl[0]
                starts.append((sl[1], sl[2]))
                computed.append(p if inner is not None else None)
                if len((inner if inner is not None else p).users) != 1:
                    ok = False
                    break
            if not ok or not self.fresh(base) or len(base.users) != len(parts):
                continue
            if starts[0][0] != 0 or starts[-1][1] is not None or any(
                    a[1] != b[0] for a, b in zip(starts, starts[1:])):
                continue
            if base in self.weights and starts[-1][0] >= self.weights[base][0].shape[0]:
                continue
            with self.g.inserting_before(n):
                new = self.g.call_function(write_back, (base, tuple(s[0] for s in starts),
                                                        *computed))
            n.replace_all_uses_with(new)
            self.g.erase_node(n)
            for p in parts:  # the plain slices are no longer read
                if p not in computed and not p.users:
                    self.g.erase_node(p)

    def _same_shape_op(self, n: fx.Node) -> bool:
        """Normalisations and activations: a new tensor with the input's shape."""
        if n.op == "call_function" and n.target in (F.group_norm, channels_last.group_norm):
            return True
        if self.ops.is_porter(n, "instance_norm"):
            return True
        m = self.ops.module(n)
        return (isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d)) and len(n.args) == 1) or (
            self.ops.activation(n) is not None)

    def in_place(self) -> None:
        """Activations and additions on a fresh tensor with no other reader run in place."""
        for n in list(self.g.nodes):
            fn = self.ops.activation(n)
            if fn is not None and self.fresh(n.args[0]) and len(n.args[0].users) == 1:
                with self.g.inserting_before(n):
                    new = self.g.call_function(fn, (n.args[0],))
                n.replace_all_uses_with(new)
                self.g.erase_node(n)
                continue
            if (n.op == "call_function" and n.target in (operator.add, torch.add)
                    and len(n.args) == 2 and not n.kwargs):
                for a, b in (n.args, n.args[::-1]):
                    if self.fresh(a) and len(a.users) == 1 and a is not b:
                        n.target, n.args = add_into, (a, b)
                        break

    def resizes(self) -> None:
        """Bilinear x2 upsamplings -> resize_bilinear2x, each with a slot in the graph's
        OutputBuffers."""
        buffers = None
        for n in list(self.g.nodes):
            if self.ops.bilinear2x(n):
                if buffers is None:
                    self.gm.add_submodule("_porter_buffers", OutputBuffers())
                    first = next(m for m in self.g.nodes if m.op != "placeholder")
                    with self.g.inserting_before(first):
                        buffers = self.g.get_attr("_porter_buffers")
                n.target, n.args, n.kwargs = resize_bilinear2x, (n.args[0], buffers,
                                                                 self.count), {}
                self.count += 1

    def split_concats(self) -> None:
        """An odd-channel concatenation read only by a convolution: the convolution takes its
        parts (it convolves them apart, or concatenates them when that is the faster way)."""
        for n in list(self.g.nodes):
            if n.op != "call_function" or n.target is not conv2d or n.args[6] != 1:
                continue
            cat = n.args[0]
            parts = self.ops.cat_parts(cat) if isinstance(cat, fx.Node) else None
            if not parts or len(parts) < 2 or len(cat.users) != 1:
                continue
            n.target, n.args = conv2d_parts, (tuple(parts), *n.args[1:])
            self.g.erase_node(cat)

    def fuse_activations(self) -> None:
        """An in-place activation on a convolution's only use -> the convolution's post-op."""
        names = {torch.relu_: "relu", _relu6_: "relu6", torch.sigmoid_: "sigmoid"}
        for n in list(self.g.nodes):
            name = names.get(n.target) if n.op == "call_function" else None
            conv = n.args[0] if name else None
            if (not isinstance(conv, fx.Node) or conv.op != "call_function"
                    or conv.target is not conv2d or len(conv.users) != 1 or len(conv.args) != 7
                    or conv.kwargs):
                continue
            conv.args = (*conv.args, name)
            n.replace_all_uses_with(conv)
            self.g.erase_node(n)

    def layout(self) -> None:
        """Activations channels-last from the image inputs on (``porter.channels_last``)."""
        channels_last.apply_channels_last(
            self.gm, keeps=(conv2d, conv2d_parts, resize_bilinear2x, write_back, add_into,
                            *_INPLACE.values()),
            convs={conv2d, conv2d_parts},
            same_code=lambda n: any(self.ops.is_porter(n, k)
                                    for k in ("slice_", "concat", "interpolate")),
            owned=lambda name: name.startswith("_porter_folded_"))

    def run(self) -> fx.GraphModule:
        self.convs()
        self.fold_batch_norms()
        self.instance_norms()
        self.manual_instance_norms()
        self.resizes()
        self.write_backs()
        self.split_concats()
        self.in_place()
        self.fuse_activations()
        self.layout()
        self.g.eliminate_dead_code()
        self.g.lint()
        self.gm.recompile()
        return self.gm


def _leaf_helpers(module: nn.Module) -> tuple[Callable, ...]:
    """Plain functions defined beside the class of generated source (model.py's op helpers):
    fx records calls to them as single nodes instead of tracing into their shape logic. Clean
    graphs (porter's own packages) are traced through."""
    cls = type(module).__dict__.get("_porter_fast_base", type(module))
    if cls.__module__.split(".")[0] == "porter":
        return ()
    namespace = getattr(cls.forward, "__globals__", {})
    return tuple(v for v in namespace.values()
                 if callable(v) and getattr(v, "__module__", None) == cls.__module__
                 and type(v).__name__ == "function")


class _Tracer(fx.Tracer):
    """fx tracing that keeps literal tuple subclasses (generated source's ``ShapeValue``) as
    they are (fx would pass them on as plain tuples), and keeps porter's NPU-safe substitutes
    whole: they branch on the input's dtype, which fx cannot trace, and ``--verify npu``
    checks the substituted module."""

    def __init__(self, autowrap_functions: tuple) -> None:
        super().__init__(autowrap_functions=autowrap_functions)
        self.constants: dict[str, Any] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return (type(m).__module__.startswith("porter.substitutes.")
                or super().is_leaf_module(m, module_qualified_name))

    def create_arg(self, a: Any) -> Any:
        if isinstance(a, tuple) and type(a) is not tuple and not hasattr(a, "_fields"):
            name = f"_porter_constant_{len(self.constants)}"
            self.constants[name] = a
            return self.create_node("get_attr", name, (), {})
        return super().create_arg(a)


def build_fast_graph(module: nn.Module) -> fx.GraphModule:
    """An optimised fx copy of ``module``'s forward (shares the unfolded weights)."""
    tracer = _Tracer(_leaf_helpers(module))
    graph = tracer.trace(module)
    holder = nn.Module()  # the module hierarchy plus the literal constants, for GraphModule
    holder.__dict__.update({"_modules": module._modules, "_parameters": module._parameters,
                            "_buffers": module._buffers, **tracer.constants})
    gm = fx.GraphModule(holder, graph, type(module).__name__ + "Fast")
    return _Builder(gm).run()


# ---------------------------------------------------------------------------------------------
# The installed call
# ---------------------------------------------------------------------------------------------
def _state_key(module: nn.Module) -> tuple | None:
    """Identity and version of every parameter and buffer; None when one is not on the CPU."""
    key = []
    for t in (*module.parameters(), *module.buffers()):
        if t.device.type != "cpu" or t.dtype != torch.float32 and t.is_floating_point():
            return None
        try:
            key.append((t.data_ptr(), t._version))
        except RuntimeError:  # inference tensors have no version counter
            key.append((t.data_ptr(), -1))
    return tuple(key)


class _FastState:
    """Per-instance cache of the optimised graph; copies and pickles start empty."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.graph: fx.GraphModule | None = None
        self.failed = False

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


_STATE = "_porter_fast_state"


def fast_graph(module: nn.Module) -> fx.GraphModule | None:
    """The optimised graph for ``module``'s current weights (built or rebuilt now), or None
    when its forward cannot take the fast path (fx cannot trace it, weights off the CPU)."""
    state = module.__dict__.get(_STATE)
    if state is None:
        state = module.__dict__[_STATE] = _FastState()
    if state.failed:
        return None
    key = _state_key(module)
    if key is None:
        return None
    if key != state.key or state.graph is None:
        try:
            state.graph = build_fast_graph(module)
        except Exception as exc:  # noqa: BLE001 - any untraceable forward runs as written
            log.debug("porter: %s runs as written (fx cannot trace it: %s)",
                      type(module).__name__, exc)
            state.failed = True
            return None
        state.key = key
    return state.graph


_DECLINED = object()


def _fast_call(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """The fast path's result, or _DECLINED when this call must run the module as written."""
    if (kwargs or module.training or not args or not inference_fast_paths()
            or module._forward_hooks or module._forward_pre_hooks
            or not all(type(a) is torch.Tensor and a.device.type == "cpu"
                       and a.dtype == torch.float32 for a in args)):
        return _DECLINED
    graph = fast_graph(module)
    if graph is None:
        return _DECLINED
    try:
        return graph(*args)
    except Exception as exc:  # noqa: BLE001 - inputs are never written in place
        out = plain_forward(module, *args)  # the module's own error, if it has one
        log.warning("porter: the CPU fast path of %s failed (%s: %s); it runs as written from "
                    "now on", type(module).__name__, type(exc).__name__, exc)
        module.__dict__[_STATE].failed = True
        return out


_CLASSES: dict[type, type] = {}
_PREFIX = "_Fast_"


def _fast_class(base: type) -> type:
    """``base`` with the fast path in ``__call__`` (forward, state dict and methods are base's,
    so scripting, export and isinstance see the class as written). Picklable by name."""
    cls = _CLASSES.get(base)
    if cls is not None:
        return cls

    def __call__(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = _fast_call(self, args, kwargs)
        return super(cls, self).__call__(*args, **kwargs) if out is _DECLINED else out

    qualname = _PREFIX + f"{base.__module__}:{base.__qualname__}".encode().hex()
    cls = type(base.__name__, (base,), {"__call__": __call__, "__module__": __name__,
                                        "__qualname__": qualname, "_porter_fast_base": base,
                                        "__doc__": base.__doc__})
    _CLASSES[base] = cls
    return cls


def __getattr__(name: str) -> type:  # unpickling an optimised module finds its class here
    if name.startswith(_PREFIX):
        import importlib

        mod_name, _, qual = bytes.fromhex(name[len(_PREFIX):]).decode().partition(":")
        obj: Any = importlib.import_module(mod_name)
        for part in qual.split("."):
            obj = getattr(obj, part)
        return _fast_class(obj)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def optimize_for_inference(module: nn.Module) -> nn.Module:
    """Give ``module`` the CPU inference fast path (in place; returns it). Idempotent.

    The instance's class becomes a subclass of its own that only adds the fast path to
    ``__call__``; ``isinstance``, the state dict, ``forward`` and every other method are
    unchanged. Calls with forward hooks registered run as written.
    """
    if not is_optimized(module):
        module.__class__ = _fast_class(type(module))
    return module


def is_optimized(module: nn.Module) -> bool:
    """Whether :func:`optimize_for_inference` was applied to ``module``."""
    return "_porter_fast_base" in type(module).__dict__


def plain_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """Run ``module``'s forward as written, bypassing the fast path."""
    return module.forward(*args, **kwargs)
