"""The converted module: weights as named parameters, forward as a precomputed plan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from porter.converters.reuse import Reuse, inference_fast_paths, run_in_place
from porter.converters.symbolic import shape_tensor

__all__ = ["OnnxModule", "Step"]


@dataclass
class Step:
    """One runtime op: ``fn(*args, **kwargs)``; args are slot ints or literal values."""

    fn: Callable
    args: tuple[tuple[bool, Any], ...]  # (is_slot, slot index or literal)
    kwargs: dict[str, Any]
    outs: tuple[int, ...]  # output slots, -1 for an unused output
    label: str  # module path (registered or not) the node maps to
    node: str  # ONNX node name (or op_type_index when anonymous)
    op_type: str
    free: tuple[int, ...] = ()  # slots whose last reader is this step
    template: str | None = None
    reuse: Reuse | None = None  # in-place form for CPU inference (porter.converters.reuse)
    kernel: Callable | None = None  # faster CPU inference kernel (porter.converters.kernels)
    # shape arithmetic on python ints (porter.converters.symbolic): fn and its (is_slot, v) args
    symbolic: Callable | None = None
    sym_args: tuple[tuple[bool, Any], ...] = ()
    materialize: tuple[int, ...] = ()  # arg positions that read a ShapeValue but need a tensor


class OnnxModule(nn.Module):
    """An ONNX graph as a torch module.

    Weights live in named submodules (``backbone.conv1.weight``); ``forward`` walks a list of
    steps prepared at conversion time, so per-call work is one python call per graph node.
    Inputs are positional in graph-input order; one output is returned as a tensor, several
    as a tuple in graph-output order. Shape arithmetic runs on python ints (symbolic sizes under
    ``torch.export``), except in :meth:`run_with_intermediates`, which records every value as
    the tensor ONNX defines.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self._steps: list[Step] = []
        self._n_slots = 0
        self._input_slots: list[int] = []
        self._output_slots: list[int] = []
        self._const_slots: list[tuple[int, str]] = []  # (slot, dotted tensor path)
        self._slot_names: list[str] = []
        self._literal_outputs: dict[int, Any] = {}
        # called with each step's label before it runs (the NPU audit's dispatch capture)
        self.step_observer: Callable[[str], None] | None = None

    def _const_values(self) -> list[tuple[int, torch.Tensor]]:
        out = []
        for slot, path in self._const_slots:
            mod_path, _, attr = path.rpartition(".")
            mod = self.get_submodule(mod_path) if mod_path else self
            out.append((slot, getattr(mod, attr)))
        return out

    def _run(self, args: tuple, record: dict[str, torch.Tensor] | None = None,
             fast: bool = True) -> list:
        if len(args) != len(self._input_slots):
            raise TypeError(f"expected {len(self._input_slots)} inputs "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        env: list[Any] = [None] * self._n_slots
        for slot, a in zip(self._input_slots, args):
            env[slot] = a
        for slot, t in self._const_values():
            env[slot] = t
        for slot, v in self._literal_outputs.items():
            env[slot] = v
        observer = self.step_observer  # an observed run is the plain plan, no CPU fast paths
        inference = fast and record is None and observer is None and inference_fast_paths()
        symbolic = record is None
        for st in self._steps:
            if observer is not None:
                observer(st.label)
            if symbolic and st.symbolic is not None:
                env[st.outs[0]] = st.symbolic(*[env[v] if s else v for s, v in st.sym_args])
                for slot in st.free:
                    env[slot] = None
                continue
            vals = [env[v] if s else v for s, v in st.args]
            for k in st.materialize if symbolic else ():
                vals[k] = shape_tensor(vals[k])
            res = None
            if inference:
                if st.kernel is not None:
                    res = st.kernel(*vals)
                elif st.reuse is not None:
                    res = run_in_place(st, vals, env)
            if res is None:
                res = st.fn(*vals, **st.kwargs)
            if len(st.outs) == 1:
                env[st.outs[0]] = res
            else:
                for slot, r in zip(st.outs, res):
                    if slot >= 0:
                        env[slot] = r
            if record is not None:
                for slot in st.outs:
                    if slot >= 0:
                        record[self._slot_names[slot]] = env[slot]
            else:
                for slot in st.free:
                    env[slot] = None
        return [shape_tensor(env[s]) for s in self._output_slots]

    def forward(self, *args: torch.Tensor) -> Any:
        outs = self._run(args)
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run_plain(self, *args: torch.Tensor) -> list:
        """The graph outputs, as a list, computed with the plain torch ops only (no in-place
        reuse, no CPU inference kernels): what generated source computes, op for op."""
        return self._run(args, fast=False)

    def run_with_intermediates(self, *args: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor the plan computes, keyed by its ONNX name (inputs included)."""
        record: dict[str, torch.Tensor] = dict(zip(self.input_names, args))
        self._run(args, record)
        return record

    def node_labels(self) -> dict[str, str]:
        """ONNX tensor name -> the module path of the step that produces it."""
        out = {}
        for st in self._steps:
            for slot in st.outs:
                if slot >= 0:
                    out[self._slot_names[slot]] = st.label
        return out
