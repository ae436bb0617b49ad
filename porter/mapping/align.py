"""Align an ONNX source with a clean torch module by structure, not by names.

ONNX exports name their weights ``1013`` or ``onnx::Conv_412``: the names say nothing. Instead,
both graphs are reduced to their *parametric units* (Conv, BatchNorm, InstanceNorm, Linear,
PReLU, with a Conv directly feeding a BatchNorm collapsed into one ``conv_bn`` unit) and to the
data flow between units. Units are then paired in data-flow order: a source unit pairs with the
one unmatched target unit of a compatible kind and shape whose parametric predecessors are the
images of its own. No candidate, or two, is an error that names them: porter never guesses.

Exporters rewrite models on the way out, so pairs may differ in form: a source Conv with a bias
(PyTorch's exporter folds BatchNorm into the Conv) pairs with a target Conv + BatchNorm, which is
then filled exactly as an identity BatchNorm (gamma 1, mean 0, var 1 - eps) carrying the folded
bias; a source Conv + BatchNorm pairs with a target Conv with bias by folding. Graph constants
(resize scales, reshape operands) are checked against the module and reported as structure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx
from torch import nn

from porter.errors import MappingError
from porter.mapping.recipe import leftover_message
from porter.mapping.report import MappingReport

__all__ = ["align_by_structure", "Unit", "source_units", "target_units"]

INPUT = "<input:{}>"

# Ops whose inputs after the first are shapes/indices, not data: data flow follows input 0 only.
_SHAPE_ARG_OPS = {"Reshape", "Expand", "Resize", "Upsample", "Slice", "Tile", "Pad", "Unsqueeze",
                  "Squeeze", "TopK", "Gather", "ScatterND", "ConstantOfShape", "Range", "Split",
                  "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "CumSum", "Clip"}
_SHAPE_SOURCES = {"Shape", "Size", "Constant", "ConstantOfShape"}
_FX_SHAPE_CALLS = {"size", "dim", "shape"}


@dataclass
class Unit:
    """A parametric op: its kind, tensors by role, shapes and attributes, nearest unit ancestors."""

    key: str
    kind: str
    tensors: dict[str, str] = field(default_factory=dict)   # role -> source tensor / target name
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    preds: frozenset[str] = frozenset()
    parts: tuple[Unit, ...] = ()

    @property
    def conv(self) -> Unit:
        return self.parts[0] if self.kind == "conv_bn" else self

    @property
    def bn(self) -> Unit:
        return self.parts[1]

    def describe(self) -> str:
        shapes = ", ".join(f"{r}{list(s)}" for r, s in self.shapes.items()) or "no tensors"
        return f"{self.kind} {self.key} ({shapes})"


# ---------------------------------------------------------------------------------------------
# Source side: an ONNX graph
# ---------------------------------------------------------------------------------------------
def _onnx_conv_attrs(attrs: dict[str, Any], w_shape: tuple[int, ...]) -> dict[str, Any]:
    nd = len(w_shape) - 2
    pads = list(attrs.get("pads", [0] * 2 * nd))
    auto = attrs.get("auto_pad", "NOTSET")
    sym = pads[:nd] if auto == "NOTSET" and pads[:nd] == pads[nd:] else None
    return {"stride": tuple(attrs.get("strides", [1] * nd)),
            "dilation": tuple(attrs.get("dilations", [1] * nd)),
            "groups": int(attrs.get("group", 1)),
            "padding": tuple(sym) if sym is not None else None}


def source_units(source: Any) -> tuple[list[Unit], dict[str, list[tuple[str, str]]]]:
    """Units of an ONNX Source in graph order, and each tensor's consumers (op, node)."""
    g, tensors = source.graph, source.tensors
    inputs = {v["name"]: i for i, v in enumerate(source.meta.get("inputs", []))}
    consumers: dict[str, list[tuple[str, str]]] = {}
    producer: dict[str, str] = {}
    order = sorted(g.nodes, key=lambda n: g.nodes[n]["index"])
    for n in order:
        d = g.nodes[n]
        for t in d["inputs"]:
            if t:
                consumers.setdefault(t, []).append((d["op_type"], n))
        for t in d["outputs"]:
            producer[t] = n

    raw: dict[str, Unit] = {}
    for n in order:
        d = g.nodes[n]
        op, ins, attrs = d["op_type"], d["inputs"], d["attrs"]
        w = ins[1] if len(ins) > 1 else ""
        if op in ("Conv", "ConvTranspose") and w in tensors:
            u = Unit(n, "conv" if op == "Conv" else "conv_transpose", {"weight": w})
            if len(ins) > 2 and ins[2] in tensors:
                u.tensors["bias"] = ins[2]
            u.attrs = _onnx_conv_attrs(attrs, tensors[w].shape)
        elif op == "BatchNormalization" and all(t in tensors for t in ins[1:5]):
            u = Unit(n, "bn", dict(zip(("weight", "bias", "running_mean", "running_var"), ins[1:5])))
            u.attrs = {"eps": float(attrs.get("epsilon", 1e-5))}
        elif op == "InstanceNormalization" and all(t in tensors for t in ins[1:3]):
            u = Unit(n, "in", {"weight": ins[1], "bias": ins[2]})
            u.attrs = {"eps": float(attrs.get("epsilon", 1e-5))}
        elif op == "MatMul" and w in tensors and len(tensors[w].shape) == 2:
            u = Unit(n, "linear", {"weight": w}, attrs={"layout": "in_out"})
        elif op == "Gemm" and w in tensors and not attrs.get("transA", 0):
            u = Unit(n, "linear", {"weight": w},
                     attrs={"layout": "out_in" if attrs.get("transB", 0) else "in_out"})
            if len(ins) > 2 and ins[2] in tensors:
                u.tensors["bias"] = ins[2]
        elif op == "PRelu" and w in tensors:
            u = Unit(n, "prelu", {"weight": w})
        else:
            continue
        u.shapes = {r: tuple(tensors[t].shape) for r, t in u.tensors.items()}
        raw[n] = u

    memo: dict[str, frozenset[str]] = {}

    def data_preds(n: str) -> list[str]:
        d = g.nodes[n]
        ins = d["inputs"][:1] if d["op_type"] in _SHAPE_ARG_OPS else d["inputs"]
        return [t for t in ins if t]

    def upstream(t: str) -> frozenset[str]:
        if t in inputs:
            return frozenset({INPUT.format(inputs[t])})
        p = producer.get(t)
        if p is None or g.nodes[p]["op_type"] in _SHAPE_SOURCES:
            return frozenset()
        if p in raw:
            return frozenset({p})
        if p not in memo:
            memo[p] = frozenset().union(*(upstream(x) for x in data_preds(p)))
        return memo[p]

    for n, u in raw.items():
        u.preds = frozenset().union(*(upstream(t) for t in data_preds(n)[:1]))
    return _collapse(list(raw.values()), lambda bn: _onnx_conv_feeding(bn, raw, g, producer,
                                                                       consumers)), consumers


def _onnx_conv_feeding(bn: Unit, raw: dict[str, Unit], g: Any, producer: dict[str, str],
                       consumers: dict[str, list[tuple[str, str]]]) -> Unit | None:
    x = g.nodes[bn.key]["inputs"][0]
    p = producer.get(x)
    if p in raw and raw[p].kind == "conv" and len(consumers.get(x, [])) == 1:
        return raw[p]
    return None


def _collapse(units: list[Unit], conv_feeding) -> list[Unit]:
    """Merge each Conv that only feeds a BatchNorm with that BatchNorm into a conv_bn unit."""
    merged: dict[str, Unit] = {}
    drop: set[str] = set()
    for u in units:
        if u.kind == "bn":
            conv = conv_feeding(u)
            if conv is not None:
                merged[conv.key] = Unit(conv.key, "conv_bn", {}, {}, dict(conv.attrs), conv.preds,
                                        (conv, u))
                drop.add(u.key)
    renamed = {u.key: u.conv.key for u in merged.values() for _ in (0,)}
    out = []
    for u in units:
        if u.key in drop:
            continue
        v = merged.get(u.key, u)
        out.append(v)
    bn_to_conv = {m.bn.key: m.key for m in merged.values()}
    for u in out:
        u.preds = frozenset(bn_to_conv.get(p, renamed.get(p, p)) for p in u.preds)
    return out


# ---------------------------------------------------------------------------------------------
# Target side: a torch module traced with torch.fx
# ---------------------------------------------------------------------------------------------
_TARGET_KINDS: tuple[tuple[type, str], ...] = (
    (nn.Conv1d, "conv"), (nn.Conv2d, "conv"), (nn.Conv3d, "conv"),
    (nn.ConvTranspose2d, "conv_transpose"),
    (nn.BatchNorm1d, "bn"), (nn.BatchNorm2d, "bn"), (nn.BatchNorm3d, "bn"),
    (nn.InstanceNorm1d, "in"), (nn.InstanceNorm2d, "in"), (nn.InstanceNorm3d, "in"),
    (nn.Linear, "linear"), (nn.PReLU, "prelu"))


def _kind_of(mod: nn.Module) -> str | None:
    for cls, kind in _TARGET_KINDS:
        if isinstance(mod, cls):
            return kind
    return None


def target_units(module: nn.Module) -> tuple[list[Unit], torch.fx.GraphModule]:
    """Units of a torch module in forward order, from a torch.fx trace."""
    leaf_kinds = tuple(cls for cls, _ in _TARGET_KINDS)

    class _Tracer(torch.fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaf_kinds) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # a module that fx cannot trace cannot be aligned by structure
        raise MappingError(f"cannot trace {type(module).__name__} with torch.fx: {exc}") from exc
    gm = torch.fx.GraphModule(module, graph)
    sd = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    raw: dict[str, Unit] = {}
    nodes: dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op != "call_module":
            continue
        mod = module.get_submodule(node.target)
        kind = _kind_of(mod)
        if kind is None:
            continue
        key = str(node.target)
        if key in raw:
            raise MappingError(f"module {key} is called twice; structural alignment needs "
                               "each parametric module to run once")
        u = Unit(key, kind)
        for role in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            name = f"{key}.{role}"
            if name in sd:
                u.tensors[role] = name
                u.shapes[role] = sd[name]
        if kind in ("conv", "conv_transpose"):
            pad = mod.padding if isinstance(mod.padding, tuple) else None
            u.attrs = {"stride": tuple(mod.stride), "dilation": tuple(mod.dilation),
                       "groups": int(mod.groups), "padding": pad}
        elif kind in ("bn", "in"):
            u.attrs = {"eps": float(mod.eps), "affine": bool(mod.affine)}
        raw[key], nodes[key] = u, node

    memo: dict[torch.fx.Node, frozenset[str]] = {}

    def upstream(n: torch.fx.Node) -> frozenset[str]:
        if n.op == "placeholder":
            return frozenset({INPUT.format(placeholders.index(n))})
        if n.op == "call_module" and str(n.target) in raw:
            return frozenset({str(n.target)})
        if n.op in ("get_attr",) or (n.op in ("call_method", "call_function")
                                      and getattr(n.target, "__name__", n.target)
                                      in _FX_SHAPE_CALLS):
            return frozenset()
        if n not in memo:
            memo[n] = frozenset().union(*(upstream(a) for a in _data_args(n)))
        return memo[n]

    for key, u in raw.items():
        u.preds = frozenset().union(*(upstream(a) for a in _data_args(nodes[key])))

    def conv_feeding(bn: Unit) -> Unit | None:
        args = _data_args(nodes[bn.key])
        src = args[0] if args else None
        if (src is not None and src.op == "call_module" and str(src.target) in raw
                and raw[str(src.target)].kind == "conv" and len(src.users) == 1):
            return raw[str(src.target)]
        return None

    return _collapse(list(raw.values()), conv_feeding), gm


def _data_args(n: torch.fx.Node) -> list[torch.fx.Node]:
    """Inputs of an fx node that carry data (the tensor being resized, not its size)."""
    if n.op == "call_function" and getattr(n.target, "__name__", "") == "interpolate":
        return [a for a in n.args[:1] if isinstance(a, torch.fx.Node)]
    return list(n.all_input_nodes)


# ---------------------------------------------------------------------------------------------
# Pairing
# ---------------------------------------------------------------------------------------------
def _conv_sig(u: Unit) -> tuple:
    c = u.conv
    return (c.kind, c.shapes["weight"], c.attrs["groups"], c.attrs["stride"], c.attrs["dilation"])


def _pads_agree(s: Unit, t: Unit) -> bool:
    ps, pt = s.conv.attrs.get("padding"), t.conv.attrs.get("padding")
    return ps is None or pt is None or tuple(ps) == tuple(pt)


def _compatible(s: Unit, t: Unit) -> bool:
    if s.kind in ("conv", "conv_bn", "conv_transpose") and t.kind in ("conv", "conv_bn",
                                                                       "conv_transpose"):
        if _conv_sig(s) != _conv_sig(t) or not _pads_agree(s, t):
            return False
        if s.kind == t.kind or s.kind == "conv_transpose" or t.kind == "conv_transpose":
            return s.kind == t.kind
        if t.kind == "conv_bn":   # source conv folded a BatchNorm into its bias
            return "bias" in s.tensors and "bias" not in t.conv.tensors
        return "bias" in t.tensors  # source conv_bn folded into a target conv with bias
    if s.kind != t.kind:
        return False
    if s.kind == "linear":
        sw, tw = s.shapes["weight"], t.shapes["weight"]
        sw = sw if s.attrs["layout"] == "out_in" else sw[::-1]
        return tuple(sw) == tuple(tw) and (("bias" in s.tensors) == ("bias" in t.tensors))
    if s.kind in ("bn", "prelu"):
        return s.shapes["weight"] == t.shapes.get("weight")
    if s.kind == "in":
        return (not t.attrs["affine"]) or s.shapes["weight"] == t.shapes.get("weight")
    return False


def _pair(src: list[Unit], tgt: list[Unit]) -> dict[str, Unit]:
    images: dict[str, str] = {}
    pairs: dict[str, Unit] = {}
    free = {u.key: u for u in tgt}
    for s in src:
        want = frozenset(images.get(p, p) for p in s.preds)
        cands = [t for t in free.values() if _compatible(s, t) and t.preds == want]
        if not cands:
            loose = [t.describe() for t in free.values() if _compatible(s, t)]
            hint = (f"; same kind and shape but other data flow: {', '.join(loose[:3])}"
                    if loose else "")
            raise MappingError(f"structure: no target unit fits source {s.describe()}{hint}")
        if len(cands) > 1:
            raise MappingError(
                f"structure: source {s.describe()} ties between "
                f"{' and '.join(c.key for c in cands)}; refusing to guess")
        t = cands[0]
        del free[t.key]
        images[s.key] = t.key
        pairs[s.key] = t
    if free:
        raise MappingError(leftover_message(
            "structure", [], [t.describe() for t in free.values()]))
    return pairs


# ---------------------------------------------------------------------------------------------
# Filling the target state dict
# ---------------------------------------------------------------------------------------------
class _Filler:
    def __init__(self, source: Any, module: nn.Module, report: MappingReport) -> None:
        self.tensors, self.report = source.tensors, report
        self.target_shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        self.target_dtypes = {k: v.dtype for k, v in module.state_dict().items()}
        self.state: dict[str, torch.Tensor] = {}
        self.seen: set[str] = set()

    def read(self, name: str) -> np.ndarray:
        arr = self.tensors[name].numpy()
        return arr if arr.dtype == np.float32 else arr.astype(np.float32)

    def put(self, target: str, value: np.ndarray, sources: Iterable[str], transform: str | None,
            note: str = "") -> None:
        value = np.asarray(value)
        if target in self.state:
            raise MappingError(f"structure: {target} filled twice")
        if tuple(value.shape) != self.target_shapes[target]:
            raise MappingError(f"structure: {list(value.shape)} does not fit {target} "
                               f"{list(self.target_shapes[target])}")
        if not value.flags.writeable or not value.flags.c_contiguous:
            value = np.array(value, copy=True, order="C")
        self.state[target] = torch.from_numpy(value).to(
            self.target_dtypes[target])
        sources = list(sources)
        if not sources:
            self.report.add(None, target, "filled", transform, None, list(value.shape), note)
        for s in sources:
            self.seen.add(s)
            self.report.add(s, target, "mapped", transform, list(self.tensors[s].shape),
                            list(value.shape), note)

    def direct(self, s: Unit, t: Unit, roles: Iterable[str], transform=None) -> None:
        for role in roles:
            src = s.tensors[role]
            arr = self.read(src)
            if transform is not None:
                arr = transform(arr)
            self.put(t.tensors[role], arr, [src], getattr(transform, "__name__", None))

    def drop(self, name: str, note: str, action: str = "dropped") -> None:
        self.seen.add(name)
        self.report.add(name, None, action, None, list(self.tensors[name].shape), None, note)


def _fill_pair(f: _Filler, s: Unit, t: Unit) -> None:
    from porter.mapping.layouts import transpose_2d

    if s.kind == "conv_bn" and t.kind == "conv_bn":
        f.direct(s.conv, t.conv, ["weight"])
        bn_roles = ["weight", "bias", "running_mean", "running_var"]
        if "bias" in s.conv.tensors and "bias" not in t.conv.tensors:
            b = s.conv.tensors["bias"]
            mean = s.bn.tensors["running_mean"]
            f.put(t.bn.tensors["running_mean"], f.read(mean) - f.read(b), [mean, b],
                  "fold_conv_bias_into_bn_mean")
            bn_roles.remove("running_mean")
        elif "bias" in s.conv.tensors:
            f.direct(s.conv, t.conv, ["bias"])
        elif "bias" in t.conv.tensors:
            f.put(t.conv.tensors["bias"], np.zeros(t.conv.shapes["bias"], np.float32), [],
                  "zeros", "source conv has no bias")
        f.direct(s.bn, t.bn, bn_roles)
        _check_eps(s.bn, t.bn)
    elif s.kind == "conv" and t.kind == "conv_bn":
        eps = t.bn.attrs["eps"]
        f.direct(s.conv, t.conv, ["weight"])
        c = t.bn.shapes["weight"]
        f.put(t.bn.tensors["bias"], f.read(s.tensors["bias"]), [s.tensors["bias"]],
              "unfold_bn_bias", "source folded BatchNorm into the conv; identity statistics")
        f.put(t.bn.tensors["weight"], np.ones(c, np.float32), [], "ones", "unfolded BatchNorm")
        f.put(t.bn.tensors["running_mean"], np.zeros(c, np.float32), [], "zeros",
              "unfolded BatchNorm")
        f.put(t.bn.tensors["running_var"], np.full(c, 1.0 - eps, np.float32), [], "1-eps",
              "unfolded BatchNorm: var + eps == 1")
    elif s.kind == "conv_bn" and t.kind == "conv":
        g, b, m, v = (f.read(s.bn.tensors[r]) for r in
                      ("weight", "bias", "running_mean", "running_var"))
        scale = g / np.sqrt(v + s.bn.attrs["eps"])
        w_name = s.conv.tensors["weight"]
        w = f.read(w_name) * scale.reshape(-1, *([1] * (len(s.conv.shapes["weight"]) - 1)))
        bias0 = f.read(s.conv.tensors["bias"]) if "bias" in s.conv.tensors else 0.0
        srcs = [s.bn.tensors[r] for r in ("weight", "bias", "running_mean", "running_var")]
        f.put(t.tensors["weight"], w.astype(np.float32), [w_name], "fold_bn_into_conv_weight")
        f.put(t.tensors["bias"], ((bias0 - m) * scale + b).astype(np.float32),
              srcs + ([s.conv.tensors["bias"]] if "bias" in s.conv.tensors else []),
              "fold_bn_into_conv_bias")
    elif s.kind in ("conv", "conv_transpose"):
        f.direct(s, t, [r for r in ("weight", "bias") if r in s.tensors])
    elif s.kind == "bn":
        f.direct(s, t, ["weight", "bias", "running_mean", "running_var"])
        _check_eps(s, t)
    elif s.kind == "in":
        _check_eps(s, t)
        if t.attrs["affine"]:
            f.direct(s, t, ["weight", "bias"])
        else:
            w, b = f.read(s.tensors["weight"]), f.read(s.tensors["bias"])
            if not (np.all(w == 1.0) and np.all(b == 0.0)):
                raise MappingError(f"structure: {s.describe()} has a learned affine but target "
                                   f"{t.key} is InstanceNorm(affine=False)")
            for name in (s.tensors["weight"], s.tensors["bias"]):
                f.drop(name, f"identity affine of non-affine InstanceNorm {t.key} (verified)")
    elif s.kind == "linear":
        tf = None if s.attrs["layout"] == "out_in" else transpose_2d
        f.direct(s, t, ["weight"], tf)
        if "bias" in s.tensors:
            f.direct(s, t, ["bias"])
    elif s.kind == "prelu":
        w = f.read(s.tensors["weight"]).reshape(t.shapes["weight"])
        f.put(t.tensors["weight"], w, [s.tensors["weight"]], "reshape")


def _check_eps(s: Unit, t: Unit) -> None:
    if not np.isclose(s.attrs["eps"], t.attrs["eps"], rtol=1e-3, atol=0):
        raise MappingError(f"structure: {s.key} uses epsilon {s.attrs['eps']:g}, target "
                           f"{t.key} uses {t.attrs['eps']:g}")


# ---------------------------------------------------------------------------------------------
# Graph constants
# ---------------------------------------------------------------------------------------------
def _fx_resize_scales(gm: torch.fx.GraphModule) -> Counter:
    scales: Counter = Counter()
    for n in gm.graph.nodes:
        if n.op == "call_function" and getattr(n.target, "__name__", "") == "interpolate":
            sf = n.kwargs.get("scale_factor", n.args[2] if len(n.args) > 2 else None)
            if sf is not None:
                sf = tuple(sf) if isinstance(sf, (tuple, list)) else (sf, sf)
                scales[tuple(round(float(v), 6) for v in sf)] += 1
    return scales


def _account_constants(f: _Filler, source: Any, consumers: dict[str, list[tuple[str, str]]],
                       gm: torch.fx.GraphModule) -> None:
    """Account for tensors that are graph constants, checking resize scales against the module."""
    g = source.graph
    resize: Counter = Counter()
    dynamic_resizes = 0
    for _, d in g.nodes(data=True):
        if d["op_type"] not in ("Resize", "Upsample"):
            continue
        ins = d["inputs"]
        scales = ins[2] if d["op_type"] == "Resize" and len(ins) > 2 else (
            ins[1] if d["op_type"] == "Upsample" and len(ins) > 1 else "")
        arr = np.asarray(source.tensors[scales].numpy()) if scales in source.tensors else None
        if arr is not None and arr.size == 4:
            resize[tuple(round(float(v), 6) for v in arr[2:])] += 1
        else:
            dynamic_resizes += 1
    if resize and not dynamic_resizes:
        # Compare the sets of factors: exporters merge identical resizes of one tensor (CSE).
        module_scales = _fx_resize_scales(gm)
        if set(resize) != set(module_scales):
            raise MappingError(f"structure: source resizes by {sorted(resize)} but the module by "
                               f"{sorted(module_scales)}")
    for name, ref in source.tensors.items():
        if name in f.seen:
            continue
        uses = consumers.get(name, [])
        ops = {op for op, _ in uses}
        value = np.asarray(ref.numpy())
        if ops and ops <= {"Resize", "Upsample"}:
            if value.size == 0:
                note = "empty Resize roi"
            elif value.dtype.kind == "f":
                note = f"Resize scales {value.tolist()}, matched by the module's interpolate calls"
            else:
                note = f"Resize sizes {value.tolist()}"
            f.drop(name, note, "structure")
        elif ops and arr_is_int(ref) and ops <= {"Reshape", "Concat", "Expand", "Slice", "Tile",
                                                 "Unsqueeze", "Squeeze", "Pad", "Gather",
                                                 "ConstantOfShape", "Range"}:
            f.drop(name, f"shape operand of {'/'.join(sorted(ops))} (value {value.tolist()})",
                   "structure")
        elif ops == {"Clip"} and value.size == 1 and all(
                name in g.nodes[n]["inputs"][1:] and name != g.nodes[n]["inputs"][0]
                for _, n in uses):
            # simplifiers (onnxslim) turn Clip's Constant min/max into initializers
            f.drop(name, f"Clip bound {value.item():g} (a ReLU6/hardtanh limit, covered by "
                   "parity)", "structure")


def arr_is_int(ref: Any) -> bool:
    return np.dtype(ref.dtype).kind in "iu"


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def align_by_structure(source: Any, module: nn.Module, check_only: bool = False
                       ) -> tuple[dict[str, torch.Tensor], MappingReport]:
    """Map every tensor of an ONNX ``source`` onto ``module`` by structure; strict both ways.

    Returns the state dict to load and the report. Raises MappingError naming leftovers on
    either side, ties, or mismatching graph constants. ``check_only`` stops after pairing the
    units (no tensor is read), which is what ``--graph auto`` needs to decide.
    """
    if source.graph is None:
        raise MappingError(f"{source.format} source has no op graph to align by structure")
    src, consumers = source_units(source)
    tgt, gm = target_units(module)
    pairs = _pair(src, tgt)
    if check_only:
        return {}, MappingReport(method="structure")
    report = MappingReport(method="structure",
                           source_kinds={n: r.kind for n, r in source.tensors.items()})
    f = _Filler(source, module, report)
    folded = 0
    for s in src:
        t = pairs[s.key]
        folded += s.kind == "conv" and t.kind == "conv_bn"
        _fill_pair(f, s, t)
    _account_constants(f, source, consumers, gm)
    for name, shape in f.target_shapes.items():
        if name not in f.state and name.endswith("num_batches_tracked"):
            f.put(name, np.zeros(shape, np.int64), [], "zeros", "not stored by the source")
    if folded:
        report.notes.append(
            f"{folded} source convs carry BatchNorm folded in by the exporter; ported onto "
            "Conv + BatchNorm with identity statistics (gamma 1, mean 0, var 1 - eps), exact "
            "to within one float32 rounding")
    left_src = [n for n in source.tensors if n not in f.seen]
    left_tgt = [n for n in f.target_shapes if n not in f.state]
    if left_src or left_tgt:
        raise MappingError(leftover_message("structure", left_src, left_tgt))
    return f.state, report
