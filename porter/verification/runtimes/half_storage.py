"""float16 storage with float32 arithmetic: the fp16 rerun at the speed of float32 on any CPU.

A module cast to float16 and run on a CPU without native half kernels (AVX2-only x86, most AMD
EPYC) falls to scalar loops: one 32-channel 3×3 convolution over 256×256 took 14 s there against
0.07 s in float32, and the fp16 rerun of ``--verify npu`` took half a minute for MODNet and over
an hour for BEN2. Under :class:`HalfStorage` every tensor stays float16, but each compute op
widens its float16 operands to float32, runs, and rounds its result back to float16. That is
what the Ascend Cube unit does (float16 operands, float32 accumulation, float16 results) and what
torch's own CPU half kernels do where they are fast (float32 "opmath"), so the rerun measures
the same rounding at every op boundary, and gives the same numbers on every CPU.

Ops that write into an argument or return a view of one run natively in float16 (widening would
write into, or alias, a temporary), as do ops that choose their own output dtype or mix float16
with wider floating tensors (type promotion decides those).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils._pytree import tree_flatten, tree_map

from porter.verification.dispatch_mode import PlainDispatchMode

__all__ = ["HalfStorage"]


@functools.cache
def _op_facts(func: Any) -> tuple[bool, int | None]:
    """Per op, read from its schema once: whether it writes to or aliases an argument, and the
    position of its ``dtype`` argument (None: it has none)."""
    schema = func._schema
    aliases = (any(a.alias_info is not None for a in schema.arguments)
               or any(r.alias_info is not None for r in schema.returns))
    dtype_at = next((i for i, a in enumerate(schema.arguments) if a.name == "dtype"), None)
    return aliases, dtype_at


def _dtype_given(dtype_at: int | None, args: tuple, kwargs: dict) -> bool:
    """Whether the call names an output dtype (``softmax(x, 1, torch.float32)``, ``sum(dtype=)``)."""
    if kwargs.get("dtype") is not None:
        return True
    return dtype_at is not None and dtype_at < len(args) and args[dtype_at] is not None


def _widen(x: Any) -> Any:
    return x.float() if isinstance(x, torch.Tensor) and x.dtype == torch.float16 else x


def _narrow(x: Any) -> Any:
    return x.half() if isinstance(x, torch.Tensor) and x.dtype == torch.float32 else x


class HalfStorage(PlainDispatchMode):
    """Within this mode, float16 ops compute in float32 and store float16 (see the module doc)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        aliases, dtype_at = _op_facts(func)
        if aliases or _dtype_given(dtype_at, args, kwargs):
            return func(*args, **kwargs)
        floats = [t for t in tree_flatten((args, kwargs))[0]
                  if isinstance(t, torch.Tensor) and t.is_floating_point()]
        if not any(t.dtype == torch.float16 for t in floats) or any(
                t.dtype != torch.float16 and t.dim() > 0 for t in floats):
            return func(*args, **kwargs)
        out = func(*tree_map(_widen, args), **tree_map(_widen, kwargs))
        return tree_map(_narrow, out)
