"""Decide one ATen op call the way the dispatcher would on an Ascend NPU.

Order, as in ``computeDispatchTableEntry``: a kernel registered for the backend (torch_npu's
registry) wins; else a device-agnostic CompositeExplicitAutograd(NonFunctional) kernel runs; else
the CompositeImplicitAutograd kernel decomposes the op; else the backend fallback runs, which on
torch_npu means the CPU (or an error). Composite kernels are judged by running torch's own C++
kernel on fake (or meta) tensors below autograd and recording the ops it calls, so each part is
again decided by these rules. That is the eager path; no Python decomposition table is involved.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from porter.verification.npu.registry import NpuRegistry, canonical_op_name

__all__ = ["Decision", "METADATA_OPS", "decide", "is_metadata_op", "op_label"]

# size queries of a symbolic shape: they read tensor metadata and run no kernel on any device
METADATA_OPS = frozenset({"aten::sym_size", "aten::sym_stride", "aten::sym_numel",
                          "aten::sym_storage_offset", "aten::size", "aten::stride",
                          "aten::numel", "aten::storage_offset"})

_DK = torch._C.DispatchKey
_COMPOSITES = (
    ("CompositeExplicitAutogradNonFunctional", _DK.CompositeExplicitAutogradNonFunctional),
    ("CompositeExplicitAutograd", _DK.CompositeExplicitAutograd),
    ("CompositeImplicitAutograd", _DK.CompositeImplicitAutograd),
)
_MAX_DEPTH = 12


def is_metadata_op(op: Any) -> bool:
    """True for size/stride queries (``aten::sym_size.int``, ``aten::size``): no kernel runs."""
    return op.namespace == "aten" and op._schema.name in METADATA_OPS


def op_label(op: Any) -> str:
    """``aten::add.Tensor`` / ``aten::relu`` for an OpOverload."""
    return f"{op.namespace}::{canonical_op_name(op)}"


@dataclass
class Decision:
    """How one op call runs: ``npu`` | ``decomposed`` | ``missing``, with its parts."""

    op: str
    status: str
    kernel: str
    parts: list[Decision] = field(default_factory=list)
    note: str = ""

    def leaves(self) -> list[Decision]:
        if not self.parts:
            return [self]
        return [leaf for part in self.parts for leaf in part.leaves()]

    def missing_chains(self, prefix: tuple[str, ...] = ()) -> list[list[str]]:
        """Each path from this op down to an op with no kernel."""
        here = (*prefix, self.op)
        if not self.parts:
            return [list(here)] if self.status == "missing" else []
        return [c for part in self.parts for c in part.missing_chains(here)]


class _RecordCalls(TorchDispatchMode):
    """Record each op a composite kernel calls (below autograd, so composites arrive whole)."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in dynamo.disable unless told not to, which
        # imports all of torch._dynamo (about a second) on the first op; nothing is compiled
        # here, so there is nothing to disable
        return False

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, tuple, dict]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls.append((func, args, kwargs))
        return func(*args, **kwargs)


def _run_composite(op: Any, key: Any, args: tuple, kwargs: dict, fake_mode: Any) -> list:
    recorder = _RecordCalls()
    mode = fake_mode if fake_mode is not None else contextlib.nullcontext()  # meta arguments
    with mode, torch._C._AutoDispatchBelowAutograd(), recorder:
        op._op_dk(key, *args, **kwargs)
    return [c for c in recorder.calls if isinstance(c[0], torch._ops.OpOverload)
            and c[0].namespace != "prim"  # prim::device & co. query metadata, no kernel
            and not is_metadata_op(c[0])]


def decide(op: Any, args: tuple, kwargs: dict, registry: NpuRegistry, fake_mode: Any,
           depth: int = 0) -> Decision:
    """Decide how ``op(*args, **kwargs)`` would run on an NPU, recursively: ``args`` are fake
    tensors of ``fake_mode``, or meta tensors with ``fake_mode`` None."""
    label = op_label(op)
    if op.namespace == "aten" and registry.has_kernel(op):
        return Decision(label, "npu", "torch_npu")
    name = op.name()
    for key_name, key in _COMPOSITES:
        if not torch._C._dispatch_has_kernel_for_dispatch_key(name, key_name):
            continue
        if depth >= _MAX_DEPTH:
            return Decision(label, "missing", key_name, note="decomposition too deep")
        try:
            calls = _run_composite(op, key, args, kwargs, fake_mode)
        except Exception as exc:  # noqa: BLE001 - a kernel that cannot run on fakes is reported
            return Decision(label, "missing", key_name,
                            note=f"could not trace {key_name} kernel: {type(exc).__name__}")
        parts = [decide(f, a, k, registry, fake_mode, depth + 1) for f, a, k in calls]
        bad = any(p.status == "missing" for p in parts)
        return Decision(label, "missing" if bad else "decomposed", key_name, parts)
    return Decision(label, "missing", "none",
                    note="no torch_npu kernel and no composite kernel: CPU fallback or error")
