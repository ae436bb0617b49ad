"""In-place reuse of dying activations when a converted module runs inference on the CPU.

CPU torch has no caching allocator: every op output is a fresh malloc that the kernel then
faults in page by page, so a ReLU after a convolution costs a second full-size buffer. Where an
elementwise step is the last reader of its input, the plan may write its result into that
input instead, as onnxruntime's allocation planner does.

Overwriting a tensor is only safe when nothing else can observe it. Liveness (the step is the
input's last reader, the input is not a graph input, output or weight) is decided when the plan
is built; the rest is checked on every call, because converters may legitimately return an
input object itself or a view of it:

* no other Python reference to the tensor object exists (another slot, a kwarg, the caller);
* no other tensor shares its storage (views, a base kept alive by a view);
* it is a plain dense CPU float tensor, autograd is off and nothing traces or compiles the
  module (export and the NPU audit therefore still see the out-of-place op).

Accelerators are left alone: their caching allocators make fresh outputs cheap, and the NPU
audit vouches for the out-of-place ops.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["OutputBuffers", "Reuse", "inference_fast_paths", "plan_reuse", "run_in_place"]


@dataclass(frozen=True)
class Reuse:
    """How a step can run in place, overwriting ``vals[k]`` for one k in ``positions``.

    Unary forms are called ``fn(*vals)`` and overwrite ``vals[0]``; ``binary`` ones are called
    ``fn(a, b, out=vals[k])`` and broadcast, so the overwritten operand must already have the
    result's shape and dtype.
    """

    fn: Callable[..., torch.Tensor]
    positions: tuple[int, ...]
    binary: bool = False


def _relu6_(x: torch.Tensor) -> torch.Tensor:
    return F.hardtanh_(x, 0.0, 6.0)


_UNARY: dict[Callable, Callable[..., torch.Tensor]] = {
    torch.relu: torch.relu_, F.relu6: _relu6_, torch.sigmoid: torch.sigmoid_,
    torch.tanh: torch.tanh_, torch.abs: torch.abs_, torch.neg: torch.neg_,
    torch.exp: torch.exp_, torch.sqrt: torch.sqrt_, torch.erf: torch.erf_,
    F.leaky_relu: F.leaky_relu_,
}
_BINARY: tuple[Callable, ...] = (torch.add, torch.sub, torch.mul)


def _variant(fn: Callable, args: Sequence[tuple[bool, Any]], kwargs: dict) -> Reuse | None:
    """The in-place form of a step, if it has one."""
    from porter.converters.ops.elementwise import clip

    if kwargs or not args:
        return None
    literal_rest = all(not s for s, _ in args[1:])
    if fn in _UNARY and literal_rest:
        return Reuse(_UNARY[fn], (0,))
    if fn is clip and literal_rest and all(v is None or isinstance(v, float) for _, v in args[1:]):
        return Reuse(torch.clamp_, (0,))
    if fn in _BINARY and len(args) == 2:
        return Reuse(fn, (0, 1), binary=True)
    return None


def plan_reuse(steps: Sequence[Any], protected: set[int]) -> None:
    """Set each step's ``reuse`` to its in-place form where one of its inputs may be overwritten.

    An input qualifies when its slot dies at this step (``free``), is read once by it, and is
    not ``protected`` (graph inputs, outputs and weights).
    """
    for st in steps:
        st.reuse = None
        found = _variant(st.fn, st.args, st.kwargs)
        if found is None or len(st.outs) != 1:
            continue
        slots = [v for s, v in st.args if s]
        ok = tuple(k for k in found.positions if st.args[k][0] and st.args[k][1] in st.free
                   and st.args[k][1] not in protected and slots.count(st.args[k][1]) == 1)
        if ok:
            st.reuse = replace(found, positions=ok)


def _held_refs(vals: list, k: int) -> int:
    return sys.getrefcount(vals[k])


def _storage_refs(t: torch.Tensor) -> int:
    return torch._C._storage_Use_Count(t.untyped_storage()._cdata)


def _probe() -> tuple[int, int] | None:
    """Reference counts of a tensor that only a list holds (they differ across versions)."""
    if not hasattr(torch._C, "_storage_Use_Count"):
        return None
    vals = [torch.empty(4)]
    return _held_refs(vals, 0), _storage_refs(vals[0])


_SOLE = _probe()


class OutputBuffers(torch.nn.Module):
    """Large outputs kept per op (``slot``) and per thread, to be written into again by the
    same op on the next call once nothing else holds them.

    glibc serves blocks of 32 MiB and more with a fresh ``mmap`` and unmaps them on free, so
    such an output is page-faulted in on every call (MODNet's x2 upsampling at 512x512: 8,192
    faults, about 14 ms of a 380 ms forward); onnxruntime's arena keeps it. A kept buffer is
    reused only when no other Python reference and no view of it exists (the caller may have
    been handed it as an output), so a reuse can never overwrite a value someone still reads.
    The price is the arena's: the last such output of each op stays allocated between calls.
    A module (holding no parameters) so that an fx graph can reach it as an attribute;
    copies start empty.
    """

    MIN_BYTES = 16 << 20

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    @property
    def slots(self) -> dict[int, list[torch.Tensor]]:
        """This thread's kept outputs, by slot."""
        slots = getattr(self._local, "slots", None)
        if slots is None:
            slots = self._local.slots = {}
        return slots

    def take(self, slot: int, shape: torch.Size, dtype: torch.dtype) -> torch.Tensor | None:
        """The kept buffer of ``slot`` if it has this shape and dtype and is free, else None."""
        vals = self.slots.pop(slot, None)
        if (vals is None or _SOLE is None or vals[0].shape != shape or vals[0].dtype != dtype
                or _held_refs(vals, 0) != _SOLE[0] or _storage_refs(vals[0]) != _SOLE[1]):
            return None
        return vals.pop()

    def keep(self, slot: int, out: torch.Tensor) -> torch.Tensor:
        """Remember ``out`` (when large) for ``slot``'s next call; returns it."""
        if out.untyped_storage().nbytes() >= self.MIN_BYTES:
            self.slots[slot] = [out]
        return out

    def __deepcopy__(self, memo: dict) -> OutputBuffers:
        return OutputBuffers()

    def __reduce__(self) -> tuple:
        return (OutputBuffers, ())


def inference_fast_paths() -> bool:
    """Whether a forward pass may take its CPU inference paths (in-place steps, kernels) now.

    Not under autograd, tracing, compilation or :func:`plain_ops` (the NPU audit's op
    recorder), so those always see the plain torch ops a device other than the CPU runs.
    """
    return (not _PLAIN[0] and not torch.is_grad_enabled() and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling())


_PLAIN = [0]


@contextlib.contextmanager
def plain_ops() -> Iterator[None]:
    """Inside the block, forwards take no CPU inference path: the ops they dispatch are the
    module's own, as a device without porter's CPU kernels runs them."""
    _PLAIN[0] += 1
    try:
        yield
    finally:
        _PLAIN[0] -= 1


def _overwritable(vals: list, k: int, result_dtype: torch.dtype | None) -> bool:
    if type(vals[k]) is not torch.Tensor or _held_refs(vals, k) != _SOLE[0]:
        return False  # checked before any local name takes a reference
    t = vals[k]
    if t.device.type != "cpu" or not t.is_floating_point() or t.requires_grad:
        return False
    if not (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)):
        return False
    if result_dtype is not None and t.dtype != result_dtype:
        return False
    try:
        return _storage_refs(t) == _SOLE[1]
    except (RuntimeError, NotImplementedError):  # wrapper tensors without a storage
        return False


def run_in_place(st: Any, vals: list, env: list) -> torch.Tensor | None:
    """Run ``st`` in place on one of its dying inputs when that is safe; None otherwise.

    The dying slots are cleared from ``env`` first so that ``vals`` holds the only reference.
    """
    if _SOLE is None:  # this torch cannot report storage use counts: never overwrite
        return None
    reuse = st.reuse
    for k in reuse.positions:
        env[st.args[k][1]] = None
    dtype = None
    if reuse.binary:  # no local names for the operands: they would count as references
        if not (isinstance(vals[0], torch.Tensor) and isinstance(vals[1], torch.Tensor)):
            return None
        shape = torch.broadcast_shapes(vals[0].shape, vals[1].shape)
        dtype = torch.result_type(vals[0], vals[1])
    for k in reuse.positions:
        if reuse.binary and vals[k].shape != shape:
            continue
        if _overwritable(vals, k, dtype):
            if reuse.binary:
                return reuse.fn(vals[0], vals[1], out=vals[k])
            return reuse.fn(*vals)
    return None


def plan_frees(mod: Any, steps: list) -> set[int]:
    """Give each step the slots whose last reader it is (``Step.free``), then plan in-place
    reuse of those dying buffers; returns the slots that must outlive the plan (outputs and
    constants), which later planners need too."""
    keep = set(mod._output_slots) | {s for s, _ in mod._const_slots}
    last: dict[int, int] = {}
    for k, st in enumerate(steps):
        for is_slot, v in st.args + st.sym_args:
            if is_slot:
                last[v] = k
    frees: dict[int, list[int]] = {}
    for slot, k in last.items():
        if slot not in keep:
            frees.setdefault(k, []).append(slot)
    for k, st in enumerate(steps):
        st.free = tuple(frees.get(k, ()))
    plan_reuse(steps, keep | set(mod._input_slots))
    return keep

