"""A real Ascend NPU, when there is one: detection and running a module on it.

torch_npu is imported only after ``importlib.util.find_spec`` says it is installed; every step
is guarded, because importing torch_npu without the CANN toolkit raises (or breaks torch).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from typing import Any

import torch
from torch import nn

__all__ = ["npu_available", "run_on_npu"]


def npu_available() -> bool:
    """True when torch_npu imports, ``torch.npu.is_available()`` and at least one device exists."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        importlib.import_module("torch_npu")
        npu = getattr(torch, "npu", None)
        return bool(npu is not None and npu.is_available() and npu.device_count() > 0)
    except Exception:  # noqa: BLE001 - any failure to reach the device means "no NPU"
        return False


def run_on_npu(module: nn.Module, example_inputs: tuple, device: str = "npu:0") -> Any:
    """Run a copy of ``module`` on the NPU with the inputs moved there; outputs come back as is."""
    mod = copy.deepcopy(module).eval().to(device)
    inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in example_inputs)
    with torch.no_grad():
        out = mod(*inputs)
    npu = getattr(torch, "npu", None)
    if npu is not None:
        npu.synchronize()
    return out
