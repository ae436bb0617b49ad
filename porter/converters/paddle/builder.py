"""Build a torch module from a decoded Paddle program (legacy ProgramDesc or PIR JSON).

The result is the same plan-driven module the ONNX converter builds (:class:`OnnxModule`), so
readable-source export, the NPU audit and parity treat both alike. Ops whose inputs are all
known at conversion time (parameters, ``full``/``fill_constant`` values, shapes of constants)
are evaluated once here; every other op becomes one step. A program with ops porter cannot
convert is refused with every such op type listed at once.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
from torch import nn

from porter.converters.builder import PlanBuilder
from porter.converters.context import In, Op
from porter.converters.module import OnnxModule, Step
from porter.converters.naming import snake, weight_scope
from porter.converters.paddle.context import Context, PaddleOp, Unsupported
from porter.converters.paddle.registry import Registration, UnsupportedPaddleOpsError, lookup
from porter.converters.params import untie, weight_tensor
from porter.converters.reuse import plan_frees
from porter.errors import FormatError, PorterError
from porter.source import Source

__all__ = ["convert_paddle", "program_ops", "IO_OPS"]

#: Ops that only mark the program's boundary; the builder handles them itself.
IO_OPS = {"feed", "fetch", "pd_op.data", "pd_op.feed", "pd_op.fetch", "builtin.parameter",
          "builtin.shadow_output"}
_PIR_NULL = "%0"  # PIR writes an absent optional input as value id 0


def _raw_ops(source: Source) -> list[dict[str, Any]]:
    g = source.graph
    if g is None:
        raise FormatError(f"{source.path}: no Paddle program to convert")
    return [d for _, d in sorted(g.nodes(data=True), key=lambda kv: kv[1]["index"])]


def program_ops(source: Source) -> list[PaddleOp]:
    """The program's ops with positional inputs (legacy slots laid out by the registry)."""
    pir = source.meta.get("program_format") == "pir"
    out: list[PaddleOp] = []
    for raw in _raw_ops(source):
        t, idx, attrs = raw["op_type"], raw["index"], raw["attrs"]
        reg = lookup(t)
        if pir or t in IO_OPS or reg is None:
            ins = [None if n == _PIR_NULL else n for n in raw["inputs"]]
            outs: list[str | None] = list(raw["outputs"])
            out.append(PaddleOp(t, ins, outs, attrs, idx, pir, _struct(attrs)))
            continue
        slots_in = raw["slots"]["inputs"]
        slots_out = raw["slots"]["outputs"]
        ins = []
        for slot in reg.inputs:
            args = slots_in.get(slot.rstrip("*"), [])
            if slot.endswith("*"):
                if args:
                    name = f"{t}_{idx}.{slot.rstrip('*')}"
                    out.append(PaddleOp("builtin.combine", list(args), [name], {}, idx, False))
                    ins.append(name)
                else:
                    ins.append(None)
            else:
                ins.append(args[0] if args else None)
        outs = []
        for slot in reg.outputs:
            args = slots_out.get(slot.rstrip("*"), [])
            outs += list(args) if slot.endswith("*") else [args[0] if args else None]
        out.append(PaddleOp(t, ins, outs, attrs, idx, False))
    return out


def _struct(attrs: dict[str, Any]) -> str | None:
    s = attrs.get("struct_name")
    return s.strip("/").replace("/", ".") or None if isinstance(s, str) else None


def _to_torch(v: Any) -> torch.Tensor:
    arr = v if isinstance(v, np.ndarray) else np.asarray(v)  # a memmap stays a memmap
    if arr.dtype == np.uint16:  # bfloat16 bits
        return torch.from_numpy(arr.astype(np.int16).copy()).view(torch.bfloat16)
    return weight_tensor(arr)  # a view of the mapped params file, else a copy


def _carries_shape(result: Op, inputs: list[str | None], shape_like: set[str]) -> bool:
    """Whether an op's outputs are sizes as python lists (``shape`` and what passes them on)."""
    from porter.converters.paddle.ops import shape_fns

    fn = result.fn
    if fn is shape_fns.SOURCE:
        return True
    return fn in shape_fns.PASS and any(n in shape_like for n in inputs if n is not None)


class _Builder(PlanBuilder):
    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.ops = program_ops(source)
        self.consts: dict[str, Any] = {}
        self.params: set[str] = set()
        self.loaded: set[str] = set()  # SSA names holding parameters read from the params file
        self.version: Counter[str] = Counter()
        self.current: dict[str, str] = {}  # program name -> SSA name
        self.shape_like: set[str] = set()  # values holding sizes as python lists

    # --- names and slots ---------------------------------------------------------------------
    def define(self, name: str | None) -> str | None:
        """A fresh SSA name for a program name written by an op (legacy reuses names)."""
        if name is None:
            return None
        k = self.version[name]
        self.version[name] += 1
        ssa = name if k == 0 else f"{name}@{k}"
        self.current[name] = ssa
        return ssa

    def read(self, name: str | None, op: PaddleOp) -> str | None:
        if name is None:
            return None
        if name not in self.current:
            raise FormatError(f"{op.type} (op {op.index}) reads {name!r}, which no earlier op "
                              "produces")
        return self.current[name]

    # --- build ---------------------------------------------------------------------------------
    def check_supported(self) -> None:
        missing = Counter(op.type for op in self.ops
                          if op.type not in IO_OPS and lookup(op.type) is None)
        if missing:
            raise UnsupportedPaddleOpsError(dict(missing))

    def build(self) -> OnnxModule:
        self.check_supported()
        meta = self.source.meta
        inputs: list[str] = []
        outputs: list[tuple[str, str]] = []  # (output name, program value)
        steps: list[Step] = []
        problems: list[str] = []
        failed: set[str] = set()
        absent: set[str] = set()  # parameters the params file does not hold: read as None
        if meta.get("program_format") != "pir":  # legacy: persistable vars are the params
            for name, ref in self.source.tensors.items():
                ssa = self.define(name)
                self.consts[ssa] = _to_torch(ref.numpy())
                self.loaded.add(ssa)
                self.params.add(name)
        for op in self.ops:
            if absent:
                op.inputs = [None if n in absent else n for n in op.inputs]
            if op.type == "builtin.parameter":
                name = op.attrs["parameter_name"]
                if name not in self.source.tensors:  # declared, not saved (non-persistable)
                    absent.add(op.outputs[0])
                    continue
                ssa = self.define(op.outputs[0])
                self.consts[ssa] = _to_torch(self.source.tensors[name].numpy())
                self.loaded.add(ssa)
                self.params.add(self.current[op.outputs[0]])
                continue
            if op.type in ("feed", "pd_op.data", "pd_op.feed"):
                inputs.append(self.define(op.outputs[0]))
                self.slot(inputs[-1])
                continue
            if op.type in ("fetch", "pd_op.fetch", "builtin.shadow_output"):
                if op.inputs[0] in failed:
                    continue
                value = self.read(op.inputs[0], op)
                label = (op.attr("name") or op.attr("output_name") if op.pir else op.inputs[0])
                outputs.append((label, value))
                continue
            reg = lookup(op.type)
            if any(n in failed for n in op.inputs if n is not None):
                # downstream of a refused op: no step, but its own attributes are still judged
                # so that one error names every op that cannot be expressed
                probe = PaddleOp(op.type, [None if n in failed else self.current.get(n, n)
                                           for n in op.inputs], op.outputs, op.attrs, op.index,
                                 op.pir, op.scope)
                try:
                    reg.fn(probe, Context(probe, self.consts, self.shape_like))
                except Unsupported as exc:
                    problems.append(f"{op.type} (op {op.index}): {exc}")
                except Exception:  # noqa: BLE001 - a missing input upset it, not an attribute
                    pass
                failed.update(o for o in op.outputs if o is not None)
                continue
            if not op.pir:
                op = self._var_attrs(op, steps)
            op.params = [self.current[n] for n in op.inputs
                         if n is not None and self.current.get(n) in self.params]
            ins = [self.read(n, op) for n in op.inputs]
            resolved = PaddleOp(op.type, ins, op.outputs, op.attrs, op.index, op.pir, op.scope,
                                op.params)
            try:
                result: Op = reg.fn(resolved, Context(resolved, self.consts, self.shape_like))
                outs = [self.define(o) for o in op.outputs]
                if _carries_shape(result, ins, self.shape_like):
                    self.shape_like.update(o for o in outs if o is not None)
                step = self._fold_or_step(resolved, reg, result, outs)
            except Unsupported as exc:
                problems.append(f"{op.type} (op {op.index}): {exc}")
                failed.update(o for o in op.outputs if o is not None)
                continue
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as exc:
                # attributes or constants a converter did not expect: refuse this op (the
                # caller may fall back to paddle2onnx) rather than fail with a traceback
                problems.append(f"{op.type} (op {op.index}): {type(exc).__name__}: {exc}")
                failed.update(o for o in op.outputs if o is not None)
                continue
            if step is not None:
                steps.append(step)
        if problems:
            shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more"
                                               if len(problems) > 8 else "")
            raise Unsupported(f"the Paddle-to-torch converter cannot express: {shown}")
        self._finish(inputs, outputs, meta, steps)
        return self.mod.eval()

    def _var_attrs(self, op: PaddleOp, steps: list[Step]) -> PaddleOp:
        """A legacy op whose attribute names variables (a VARS attribute, e.g. a computed
        ``output_size``): those variables become one extra list input, the attribute ``In``."""
        extra: dict[str, list[str]] = {
            k: v for k, v in op.attrs.items()
            if isinstance(v, list) and v and all(isinstance(n, str) and n in self.current
                                                 for n in v)}
        if not extra:
            return op
        attrs, inputs = dict(op.attrs), list(op.inputs)
        reg = lookup("builtin.combine")
        for k, names in extra.items():
            name = f"{op.type}_{op.index}.{k}"
            combine = PaddleOp("builtin.combine", [self.read(n, op) for n in names], [name], {},
                               op.index, False)
            result = reg.fn(combine, Context(combine, self.consts, self.shape_like))
            outs = [self.define(name)]
            if _carries_shape(result, combine.inputs, self.shape_like):
                self.shape_like.update(outs)
            step = self._fold_or_step(combine, reg, result, outs)
            if step is not None:
                steps.append(step)
            attrs[k] = In(len(inputs))
            inputs.append(name)
        return PaddleOp(op.type, inputs, op.outputs, attrs, op.index, op.pir, op.scope)

    def _fold_or_step(self, op: PaddleOp, reg: Registration, result: Op,
                      outs: list[str | None]) -> Step | None:
        used = [a.index for a in (*result.args, *result.kwargs.values()) if isinstance(a, In)]
        owns = isinstance(result.fn, nn.Module) and any(True for _ in result.fn.parameters())
        if not owns and all(op.inputs[i] is None or op.inputs[i] in self.consts for i in used):
            vals = [self.consts.get(n) if n is not None else None for n in op.inputs]
            args = [vals[a.index] if isinstance(a, In) else a for a in result.args]
            kwargs = {k: vals[v.index] if isinstance(v, In) else v
                      for k, v in result.kwargs.items()}
            with torch.no_grad():
                res = result.fn(*args, **kwargs)
            res_list = [res] if result.n_out == 1 else list(res)
            for name, r in zip(outs, res_list):
                if name is not None:
                    self.consts[name] = r
            return None
        return self._step(op, reg, result, outs)

    def _holder_slot(self, ssa: str, attr: str, holder: dict) -> int:
        if ssa not in self.const_paths:
            value = self.consts[ssa]
            if isinstance(value, (list, tuple)):
                raise FormatError(f"constant list {ssa!r} used as a run-time tensor")
            # a program parameter is the module's weight as loaded (a view of the mapped
            # params file, see _to_torch); computed constants are copied
            value = (value.detach() if ssa in self.loaded else value.detach().clone()) \
                if isinstance(value, torch.Tensor) else _to_torch(value)
            is_float = value.is_floating_point() and value.dim() > 0 and "running" not in attr
            while attr in holder["params"] or attr in holder["buffers"]:
                attr += "_"
            holder["params" if is_float else "buffers"][attr] = value
            self.const_paths[ssa] = attr
            holder["names"].append(ssa)
        return self.slot(ssa)

    def _step(self, op: PaddleOp, reg: Registration, result: Op,
              outs: list[str | None]) -> Step:
        ordinal = self.namer.ordinal(snake(op.type.rpartition(".")[2]).rstrip("_"))
        base = weight_scope([self._program_name(p) for p in op.params]) or ordinal
        holder: dict = {"params": {}, "buffers": {}, "names": []}

        def arg(a: Any) -> tuple[bool, Any]:
            if not isinstance(a, In):
                return False, a
            name = op.inputs[a.index] if a.index < len(op.inputs) else None
            if name is None:
                return False, None
            if name in self.consts and name not in self.slots:
                attr = reg.names[a.index] if a.index < len(reg.names) else f"input{a.index}"
                return True, self._holder_slot(name, attr, holder)
            if name not in self.slots:
                raise PorterError(f"{op.type} (op {op.index}) reads {name!r} before it is "
                                  "computed; this is a porter bug, please report it")
            return True, self.slots[name]

        args = tuple(arg(a) for a in result.args)
        kwargs = {}
        for k, v in result.kwargs.items():
            if isinstance(v, In):
                raise PorterError(f"converter for {op.type} passes a tensor as keyword {k!r}")
            kwargs[k] = v
        label, fn = base, result.fn
        if isinstance(fn, nn.Module) and (list(fn.parameters()) or list(fn.buffers())):
            label = self.namer.claim(base)
            self._attach(label, fn)
            if holder["names"]:
                self._register_holder(self.namer.claim(f"{label}_inputs"), holder)
        elif holder["names"]:
            label = self.namer.claim(base if base == ordinal
                                     else f"{base}.{ordinal.rpartition('_')[0]}")
            self._register_holder(label, holder)
        n = max(result.n_out, 1)
        slots = tuple(self.slot(o) if o is not None else -1 for o in outs[:n])
        slots += (-1,) * (n - len(slots))
        return Step(fn, args, kwargs, slots, label, op.label, op.type, template=result.template)

    def _program_name(self, ssa: str) -> str:
        return ssa.partition("@")[0]

    def _finish(self, inputs: list[str], outputs: list[tuple[str, str]], meta: dict,
                steps: list[Step]) -> None:
        declared = [i["name"] for i in meta.get("inputs", [])]
        order = [self.current[n] for n in declared if n in self.current] or inputs
        self.mod.input_names = [n.partition("@")[0] for n in order]
        self.mod._input_slots = [self.slot(n) for n in order]
        if not outputs:
            raise FormatError(f"{self.source.path}: the program fetches nothing")
        for k, (label, value) in enumerate(outputs):
            if value not in self.slots and value in self.consts:
                holder = {"params": {}, "buffers": {"value": _to_torch(self.consts[value])
                                                    if not isinstance(self.consts[value],
                                                                      torch.Tensor)
                                                    else self.consts[value]},
                          "names": [value]}
                self.const_paths[value] = "value"
                self._register_holder(self.namer.claim(f"output_{k}"), holder)
            if value not in self.slots:
                raise FormatError(f"fetched value {value!r} is never computed")
            self.mod._output_slots.append(self.slots[value])
            # intermediates are recorded by slot name: a fetched value goes by its fetch name
            self.mod._slot_names[self.slots[value]] = label
        self.mod.output_names = [label for label, _ in outputs]
        plan_frees(self.mod, steps)
        self.mod._steps = steps
        self.mod._n_slots = len(self.slots)
        untie(self.mod)  # weights viewing one loaded parameter get their own copies


def convert_paddle(source: Source) -> OnnxModule:
    """A Paddle inference model (Source from the paddle-inference importer) as a torch module.

    Raises :class:`UnsupportedPaddleOpsError` naming every op type without a converter, and
    ``Unsupported`` naming every op whose attributes the converters cannot express.
    """
    if source.format != "paddle-inference":
        raise FormatError(f"convert_paddle needs a Paddle inference model, got {source.format!r}")
    return _Builder(source).build()
