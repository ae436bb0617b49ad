"""``float32_only``: non-float32 floating parameters and buffers -> float32.

Ascend NPUs have no float64 compute (torch_npu rejects or emulates double); fp16/bf16 weights in
an fp32 graph give mixed-dtype ops. The rewrite converts every floating parameter and buffer to
float32. A forward can still create float64 tensors on its own (``torch.tensor(0.5,
dtype=torch.float64)``, numpy scalars); :func:`check_float32_forward` runs the module once and
raises PorterError naming each op that produced one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from porter.errors import PorterError
from porter.substitutes.registry import substitute

__all__ = ["rewrite_float32_only", "check_float32_forward"]


@substitute(
    "float32_only",
    replaces="floating parameters/buffers that are not float32 (float64, float16, bfloat16)",
    replacement="the same tensors as float32",
    applies_when="any parameter or buffer with a floating dtype other than float32",
)
def rewrite_float32_only(module: nn.Module) -> list[dict]:
    records = []
    for path, child in module.named_modules():
        tensors = [*child.named_parameters(recurse=False), *child.named_buffers(recurse=False)]
        for name, tensor in tensors:
            if tensor is None or not tensor.is_floating_point() or tensor.dtype == torch.float32:
                continue
            before = str(tensor.dtype).removeprefix("torch.")
            tensor.data = tensor.data.float()
            records.append({"rule": "float32_only", "module": path, "tensor": name,
                            "replaced": before, "with": "float32"})
    return records


class _Float64Watch(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat, _ = torch.utils._pytree.tree_flatten(out)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in flat):
            self.ops.append(str(func))
        return out


def check_float32_forward(module: nn.Module, example_inputs: tuple) -> None:
    """Run ``module`` once; raise PorterError if any op inside it produces a float64 tensor."""
    watch = _Float64Watch()
    with torch.no_grad(), watch:
        module(*example_inputs)
    if watch.ops:
        ops = ", ".join(dict.fromkeys(watch.ops))
        raise PorterError(f"forward still computes in float64 after float32_only: {ops}")
