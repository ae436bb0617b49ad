"""NPU audit: which ATen ops a module uses and whether torch_npu has kernels for them."""

from porter.verification.npu.audit import audit_module, raise_if_missing
from porter.verification.npu.device import npu_available, run_on_npu
from porter.verification.npu.registry import NpuRegistry, canonical_op_name, load_registry

__all__ = [
    "audit_module",
    "raise_if_missing",
    "npu_available",
    "run_on_npu",
    "NpuRegistry",
    "canonical_op_name",
    "load_registry",
]
