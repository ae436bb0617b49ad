"""Build an OnnxModule from an ONNX model: resolve converters, fold constants, name weights."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from porter.converters.context import Context, In, Node, Op, const_attr_value
from porter.converters.kernels import plan_kernels
from porter.converters.module import OnnxModule, Step
from porter.converters.naming import Namer, node_scope, snake, weight_scope
from porter.converters.params import Params, untie, weight_tensor
from porter.converters.registry import lookup
from porter.converters.reuse import plan_frees
from porter.converters.symbolic import SHAPE_ARGS, plan_symbolic
from porter.errors import FormatError, UnsupportedOpError

__all__ = ["convert_onnx", "convert_subgraph", "load_model", "outer_names"]

# ops whose result must not be computed once at conversion time
#: Most elements one folded constant may have (ConstantOfShape, Range, Expand, Tile sized by
#: values in the file); ``PORTER_MAX_FOLD_ELEMENTS`` raises it.
MAX_FOLD_ELEMENTS = int(os.environ.get("PORTER_MAX_FOLD_ELEMENTS", 1 << 28))


def _fold_elements(node: Node, vals: list[Any]) -> int | None:
    """Elements the value-sized ops would allocate when folded, computed before they run."""
    def ints(v: Any) -> list[int]:
        return [int(x) for x in np.asarray(v).reshape(-1)]

    try:
        if node.op_type == "ConstantOfShape" and vals and vals[0] is not None:
            return math.prod(max(d, 0) for d in ints(vals[0]))
        if node.op_type == "Range" and len(vals) == 3 and all(v is not None for v in vals):
            start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in vals)
            if delta == 0 or not all(map(math.isfinite, (start, limit, delta))):
                raise FormatError(f"Range {node.name!r}: delta 0 or a non-finite bound")
            return max(math.ceil((limit - start) / delta), 0)
        if node.op_type == "Expand" and len(vals) == 2 and all(v is not None for v in vals):
            shape = list(np.shape(vals[0]))
            want = ints(vals[1])
            n = max(len(shape), len(want))
            shape = [1] * (n - len(shape)) + shape
            want = [1] * (n - len(want)) + want
            return math.prod(max(a, b, 0) for a, b in zip(shape, want))
        if node.op_type == "Tile" and len(vals) >= 2 and all(v is not None for v in vals[:2]):
            return int(np.size(vals[0])) * math.prod(max(r, 0) for r in ints(vals[1]))
    except (ValueError, TypeError, OverflowError) as exc:
        raise FormatError(f"{node.op_type} {node.name!r}: bad constant operand ({exc})") from exc
    return None


_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
            "Bernoulli", "Multinomial", "Dropout"}
_PARAM_NAMES = {"W": "weight", "B": "bias", "scale": "weight", "mean": "running_mean",
                "var": "running_var", "input_mean": "running_mean", "input_var": "running_var",
                "slope": "weight", "R": "recurrence"}


def load_model(model_or_path: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(ModelProto, initializer values) from a path, a ModelProto or a porter Source."""
    import onnx
    from onnx import numpy_helper

    from porter.source import Source

    if isinstance(model_or_path, (str, Path)):
        from porter.importers.onnx import load_onnx

        model_or_path = load_onnx(Path(model_or_path))
    if isinstance(model_or_path, Source):
        if model_or_path.format != "onnx":
            raise FormatError(f"convert_onnx needs an ONNX source, got {model_or_path.format!r}")
        model = model_or_path.native
        inits = {t.name: model_or_path.tensors[t.name].numpy()  # memory maps stay maps
                 for t in model.graph.initializer}
        return model, inits
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, {t.name: numpy_helper.to_array(t)
                               for t in model_or_path.graph.initializer}
    raise TypeError(f"expected a path, onnx.ModelProto or porter Source, got {type(model_or_path)}")


def _shape_info(model: Any) -> dict[str, tuple[list[int | None] | None, int | None]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        inferred = model
    out = {}
    g = inferred.graph
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if not vi.type.HasField("tensor_type"):
            continue
        tt = vi.type.tensor_type
        shape = ([d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                  for d in tt.shape.dim] if tt.HasField("shape") else None)
        out[vi.name] = (shape, int(tt.elem_type) or None)
    return out


def _to_torch(v: np.ndarray) -> torch.Tensor:
    if not isinstance(v, np.ndarray):  # (np.asarray would drop a memory map's subclass)
        v = np.asarray(v)
    if v.dtype == object:
        raise UnsupportedOpError("string tensor", 0)
    return weight_tensor(v)  # a view of a memory-mapped source, else a copy


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach()
        if t.dtype == torch.bfloat16:
            return t.float().numpy()
        return t.numpy()
    return np.asarray(t)


def _formal_name(node: Node, i: int) -> str:
    import onnx.defs

    try:
        schema = onnx.defs.get_schema(node.op_type, node.opset, node.domain)
        formals = schema.inputs
        name = formals[min(i, len(formals) - 1)].name
        if i >= len(formals) - 1 and formals[-1].option == formals[-1].option.Variadic:
            name = f"{name}_{i - len(formals) + 1}" if len(node.inputs) > len(formals) else name
    except Exception:
        name = f"input{i}"
    if node.op_type == "Mul" and i == 1:
        return "weight"
    if node.op_type == "Add" and i == 1:
        return "bias"
    return _PARAM_NAMES.get(name, snake(name))


def _nodes(model: Any) -> list[Node]:
    opsets = {(o.domain if o.domain not in ("ai.onnx",) else ""): int(o.version)
              for o in model.opset_import}
    nodes = []
    for i, n in enumerate(model.graph.node):
        attrs = {}
        for a in n.attribute:
            if a.type == a.GRAPH:  # control-flow bodies: converters build sub-plans from them
                attrs[a.name] = a.g
                continue
            if a.type == a.GRAPHS:
                attrs[a.name] = list(a.graphs)
                continue
            if a.ref_attr_name:
                continue
            attrs[a.name] = const_attr_value(a)
        dom = "" if n.domain in ("", "ai.onnx") else n.domain
        nodes.append(Node(n.op_type, dom, n.name, list(n.input), list(n.output), attrs,
                          opsets.get(dom, opsets.get("", 0)), i, opsets))
    return nodes


def _module_path(node: Node, namer: Namer, inits: dict[str, np.ndarray], ordinal: str) -> str:
    scope = node_scope(node.name, node.op_type)
    if scope is None:
        weights = [n for n in node.inputs[1:] if n in inits and inits[n].dtype.kind == "f"]
        scope = weight_scope(weights)
    return scope or ordinal


class PlanBuilder:
    """What every builder of an :class:`OnnxModule` plan shares (the ONNX one here, the Paddle one
    in ``porter.converters.paddle``): value slots, submodules at dotted paths, weight holders."""

    def __init__(self) -> None:
        self.mod = OnnxModule()
        self.namer = Namer()
        self.slots: dict[str, int] = {}
        self.const_paths: dict[str, str] = {}  # constant value name -> attribute path

    def slot(self, name: str) -> int:
        if name not in self.slots:
            self.slots[name] = len(self.slots)
            self.mod._slot_names.append(name)
        return self.slots[name]

    def _attach(self, path: str, module: nn.Module) -> None:
        parent = self.mod
        parts = path.split(".")
        for p in parts[:-1]:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], module)

    def _register_holder(self, path: str, holder: dict) -> None:
        self._attach(path, Params(holder["params"], holder["buffers"]))
        for name in holder["names"]:
            full = f"{path}.{self.const_paths[name]}"
            self.const_paths[name] = full
            self.mod._const_slots.append((self.slot(name), full))


class _Builder(PlanBuilder):
    def __init__(self, model: Any, inits: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.model = model
        self.inits = inits  # original weights (initializers and Constant-node weights)
        self.consts: dict[str, np.ndarray] = dict(inits)
        self.shapes = _shape_info(model)
        self.sym: dict[str, bool] = {}  # names computed as ShapeValues -> whether rank 0

    def const_slot(self, name: str, node: Node, i: int, holder: dict[str, dict]) -> int:
        """A slot fed from a parameter (float) or buffer (other) holding constant ``name``."""
        if name not in self.const_paths:
            value = self.consts[name]
            attr = _formal_name(node, i)
            is_float = (np.asarray(value).dtype.kind == "f" and np.asarray(value).ndim > 0
                        and attr not in ("running_mean", "running_var"))  # statistics: buffers
            bucket = holder["params" if is_float else "buffers"]
            while attr in holder["params"] or attr in holder["buffers"]:
                attr += "_"
            bucket[attr] = _to_torch(value)
            self.const_paths[name] = attr  # prefixed by the holder path later
            holder["names"].append(name)
        return self.slot(name)

    def build(self) -> OnnxModule:
        g = self.model.graph
        init_names = set(self.inits)
        self.mod.input_names = [v.name for v in g.input if v.name not in init_names]
        self.mod._input_slots = [self.slot(n) for n in self.mod.input_names]
        steps: list[Step] = []
        for node in _nodes(self.model):
            fn = lookup(node.op_type, node.opset, node.domain)
            ctx = Context(node, self.consts, self.shapes)
            op: Op = fn(node, ctx)
            present = [n for n in node.inputs if n]
            owns_weights = isinstance(op.fn, nn.Module) and any(True for _ in op.fn.parameters())
            if (node.op_type not in _NO_FOLD and all(n in self.consts for n in present)
                    and not owns_weights and self._fold(node, op)):
                continue
            step = self._step(node, op)
            self._plan_symbolic(node, op, step)
            steps.append(step)
        for name in (o.name for o in g.output):
            if name not in self.slots and name in self.consts:
                holder = {"params": {}, "buffers": {}, "names": []}
                self.const_paths[name] = "value"
                holder["buffers"]["value"] = _to_torch(self.consts[name])
                holder["names"].append(name)
                path = self.namer.claim(f"output_{len(self.mod._const_slots)}")
                self._register_holder(path, holder)
            if name not in self.slots:  # checked before slot() would allocate one for it
                raise FormatError(f"graph output {name!r} is never produced")
            self.mod._output_slots.append(self.slot(name))
        self.mod.output_names = [o.name for o in g.output]
        self._free_lists(steps)
        self.mod._steps = steps
        self.mod._n_slots = len(self.slots)
        untie(self.mod)  # two weights viewing one mapped initializer get their own copies
        return self.mod.eval()

    def _plan_symbolic(self, node: Node, op: Op, step: Step) -> None:
        """Run shape arithmetic on python ints where it can; tensors for its other readers."""
        plan = None
        if not node.domain and len(node.outputs) == 1:
            plan = plan_symbolic(node.op_type, node.attrs, node.inputs, self.sym, self.consts)
        if plan is not None:
            fn, args, scalar = plan
            step.symbolic = fn
            step.sym_args = tuple((True, self.slots[v]) if is_slot else (False, v)
                                  for is_slot, v in args)
            self.sym[node.outputs[0]] = scalar
            return
        step.materialize = tuple(
            k for k, a in enumerate(op.args)
            if isinstance(a, In) and a.index < len(node.inputs)
            and node.inputs[a.index] in self.sym and (node.op_type, a.index) not in SHAPE_ARGS)

    def _fold(self, node: Node, op: Op) -> bool:
        """Evaluate ``node`` now; False (nothing stored) when a result is not a tensor."""
        size = _fold_elements(node, [self.consts.get(n) if n else None for n in node.inputs])
        if size is not None and size > MAX_FOLD_ELEMENTS:
            raise FormatError(f"{node.op_type} {node.name or ''!r} would fold to {size} elements, "
                              f"over porter's limit of {MAX_FOLD_ELEMENTS} "
                              "(raise PORTER_MAX_FOLD_ELEMENTS)")
        vals = [_to_torch(self.consts[n]) if n else None for n in node.inputs]
        args = [vals[a.index] if isinstance(a, In) else a for a in op.args]
        with torch.no_grad():
            res = op.fn(*args, **op.kwargs)
        outs = [res] if op.n_out == 1 else list(res)
        if any(r is None or isinstance(r, list) for r, name in zip(outs, node.outputs) if name):
            return False  # sequences (lists) and empty optionals stay runtime values
        for name, r in zip(node.outputs, outs):
            if name:
                self.consts[name] = _to_numpy(r)
                if node.op_type == "Constant":  # Paddle keeps weights in Constant nodes
                    self.inits[name] = self.consts[name]
        return True

    def _step(self, node: Node, op: Op) -> Step:
        ordinal = self.namer.ordinal(node.op_type)
        base = _module_path(node, self.namer, self.inits, ordinal)
        holder: dict = {"params": {}, "buffers": {}, "names": []}
        args = []
        for a in op.args:
            if isinstance(a, In):
                if a.index >= len(node.inputs) or not node.inputs[a.index]:
                    args.append((False, None))
                    continue
                name = node.inputs[a.index]
                if name in self.consts and name not in self.slots:
                    args.append((True, self.const_slot(name, node, a.index, holder)))
                elif name in self.slots:
                    args.append((True, self.slots[name]))
                else:
                    raise FormatError(f"node {node.name or node.op_type!r} reads {name!r} "
                                      "before it is produced (graph not topologically sorted)")
            else:
                args.append((False, a))
        label = base
        fn = op.fn
        if isinstance(fn, nn.Module) and (list(fn.parameters()) or list(fn.buffers())):
            label = self.namer.claim(base)
            self._attach(label, fn)
            if holder["names"]:
                self._register_holder(self.namer.claim(f"{label}_inputs"), holder)
        elif holder["names"]:
            # weights an op takes as inputs: `/head/Mul` -> `head.mul.weight`
            label = self.namer.claim(base if base == ordinal else f"{base}.{snake(node.op_type)}")
            self._register_holder(label, holder)
        outs = tuple(self.slot(o) if o else -1 for o in node.outputs[:max(op.n_out, 1)])
        if op.n_out > len(node.outputs):
            outs = outs + (-1,) * (op.n_out - len(node.outputs))
        return Step(fn, tuple(args), dict(op.kwargs), outs, label,
                    node.name or f"{node.op_type}_{node.index}", node.op_type,
                    template=op.template)

    def _free_lists(self, steps: list[Step]) -> None:
        keep = plan_frees(self.mod, steps)
        plan_kernels(steps, keep)


def outer_names(graph: Any) -> list[str]:
    """Names a subgraph (and the subgraphs nested in it) reads from enclosing scopes."""
    defined = {v.name for v in graph.input} | {t.name for t in graph.initializer}
    out: list[str] = []
    for n in graph.node:
        reads = list(n.input)
        for a in n.attribute:
            for g in ([a.g] if a.type == a.GRAPH else list(a.graphs)):
                reads += outer_names(g)
        for r in reads:
            if r and r not in defined and r not in out:
                out.append(r)
        defined.update(n.output)
    out += [o.name for o in graph.output if o.name not in defined and o.name not in out]
    return out


def convert_subgraph(graph: Any, opsets: dict[str, int], outer: dict[str, Any]) -> OnnxModule:
    """A control-flow body as an OnnxModule.

    ``outer`` maps each name the body reads from enclosing scopes to its constant value
    (``np.ndarray``, baked into the body) or to ``(shape, elem_type)`` when it is a runtime
    value; the module's inputs are the body's formal inputs, then those runtime outer values.
    """
    import onnx
    from onnx import helper, numpy_helper

    g = onnx.GraphProto()
    g.CopyFrom(graph)
    for name, v in outer.items():
        if isinstance(v, np.ndarray):
            g.initializer.append(numpy_helper.from_array(v, name))
        elif v[1]:
            g.input.append(helper.make_tensor_value_info(name, v[1], v[0]))
        else:
            g.input.append(onnx.ValueInfoProto(name=name))
    model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v)
                                                for d, v in opsets.items()])
    return _Builder(model, {t.name: numpy_helper.to_array(t) for t in g.initializer}).build()


def convert_onnx(model_or_path: Any) -> OnnxModule:
    """Convert an ONNX model (path, ``onnx.ModelProto`` or porter Source) to a torch module.

    Every node goes through the converter registered for its (domain, op type, since_version);
    an op without one raises :class:`porter.errors.UnsupportedOpError`. Float weights
    (initializers and Constant-node weights) become ``nn.Parameter``s under names derived from
    the graph; nodes whose inputs are all constant are evaluated once here. Shapes computed by
    ``Shape`` ops stay dynamic. The module is returned in eval mode.
    """
    import porter.converters.ops  # noqa: F401 - fills the registry

    model, inits = load_model(model_or_path)
    return _Builder(model, inits).build()
