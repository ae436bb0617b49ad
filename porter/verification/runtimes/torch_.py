"""The torch side of a parity run: a module called with named inputs, outputs named."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
import torch

__all__ = ["TorchRunner"]


class TorchRunner:
    """Calls ``module(*inputs in input_names order)`` and names its outputs ``output_names``.

    float16 on the CPU runs under :class:`~porter.verification.runtimes.half_storage.HalfStorage`
    (float16 tensors, float32 arithmetic): CPUs without half kernels are hundreds of times slower
    in native float16, and the NPU accumulates in float32 anyway.
    """

    def __init__(self, module: torch.nn.Module, input_names: Sequence[str],
                 output_names: Sequence[str], device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> None:
        self.module = module.eval().to(device=device, dtype=dtype)
        self.input_names, self.output_names = list(input_names), list(output_names)
        self.device, self.dtype = device, dtype
        self.name = f"torch-{device}" + ("" if dtype == torch.float32 else f"-{str(dtype)[6:]}")

    @torch.inference_mode()
    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = []
        for n in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device)
            args.append(t.to(self.dtype) if t.is_floating_point() else t)
        with self._arithmetic():
            out = self.module(*args)
        if isinstance(out, torch.Tensor):
            out = (out,)
        elif isinstance(out, Mapping):
            out = tuple(out[k] for k in self.output_names)
        return {n: o.detach().float().cpu().numpy() for n, o in zip(self.output_names, out)}

    def _arithmetic(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float16 and torch.device(self.device).type == "cpu":
            from porter.verification.runtimes.half_storage import HalfStorage

            return HalfStorage()
        return contextlib.nullcontext()
