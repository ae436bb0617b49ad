"""torch_npu operator registry: yaml sections, name forms, wheel / package / committed list."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from porter.errors import FormatError
from porter.verification.npu.registry import (
    canonical_op_name,
    load_registry,
    ops_from_yaml,
    registry_from_installed,
)

REPO = Path(__file__).resolve().parents[3]

BASE_YAML = """\
backend: NPU
cpp_namespace: at_npu::native
supported:
  - as_strided
  - func: clone
    op_api: True
  - squeeze.dim
custom:
  - func: npu_format_cast(Tensor self, int acl_format) -> Tensor
symint:
  - as_strided_
"""

CODEGEN_YAML = """\
autograd:
- func: _thnn_fused_gru_cell(Tensor input_gates, Tensor hidden_gates, Tensor hx) -> (Tensor, Tensor)
  impl_ns: op_api
backend: NPU
custom:
- func: npu_rotary_mul(Tensor self, Tensor r1, Tensor r2) -> Tensor
quant:
- func: dequantize.self(Tensor self) -> Tensor
  impl_ns: acl_op, op_api
supported:
- func: add.Tensor(Tensor self, Tensor other, *, Scalar alpha=1) -> Tensor
  impl_ns: acl_op, op_api
- func: relu(Tensor self) -> Tensor
  impl_ns: op_api
- func: convolution(Tensor input, Tensor weight, Tensor? bias, SymInt[] stride) -> Tensor
  impl_ns: acl_op
- func: nonzero(Tensor self) -> Tensor
  impl_ns: op_api
tocpu:
- nonzero
"""


def _fake_wheel(tmp_path: Path) -> Path:
    wheel = tmp_path / "torch_npu-9.9.9-cp311-cp311-linux_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("torch_npu/csrc/aten/npu_native_functions.yaml", BASE_YAML)
        zf.writestr("torch_npu/csrc/aten/npu_native_functions_by_codegen.yaml", CODEGEN_YAML)
        zf.writestr("torch_npu/version.py", "__version__ = '9.9.9'\n")
    return wheel


def test_committed_list_knows_common_ops() -> None:
    reg = load_registry()
    assert reg.version == "2.13.0"
    assert re.fullmatch(r"torch_npu-2\.13\.0-.*\.whl", reg.source)
    assert re.fullmatch(r"[0-9a-f]{64}", reg.sha256)
    for op in ["convolution", "add.Tensor", "relu", "relu_", "native_batch_norm", "addmm",
               "upsample_bilinear2d", "cat", "sigmoid", "hardtanh", "mean.dim",
               "adaptive_avg_pool2d", "mul.Tensor", "as_strided", "view"]:
        assert reg.has_kernel(op), op
    # composite-only ops are not NPU kernels; torch_npu dispatches them through their parts
    for op in ["conv2d", "linear", "instance_norm", "batch_norm", "upsample_bilinear2d.vec",
               "porter_fake_op", "huber_loss"]:
        assert not reg.has_kernel(op), op


def test_name_forms_agree() -> None:
    reg = load_registry()
    forms = ["aten::add.Tensor", "aten.add.Tensor", "add.Tensor", torch.ops.aten.add.Tensor]
    assert {canonical_op_name(f) for f in forms} == {"add.Tensor"}
    assert {canonical_op_name(f) for f in ["aten::relu", "aten.relu.default", "relu.default",
                                           torch.ops.aten.relu.default]} == {"relu"}
    assert all(f in reg for f in forms)
    assert canonical_op_name("add.Tensor(Tensor self, Tensor other) -> Tensor") == "add.Tensor"


def test_sections_parsed_and_cpu_fallbacks_excluded(tmp_path: Path) -> None:
    sections = ops_from_yaml(CODEGEN_YAML)
    assert sections["tocpu"] == {"nonzero"}
    assert sections["custom"] == {"npu_rotary_mul"}
    reg = load_registry(_fake_wheel(tmp_path))
    assert reg.ops == {"as_strided", "clone", "squeeze.dim", "_thnn_fused_gru_cell",
                       "dequantize.self", "add.Tensor", "relu", "convolution"}
    assert not reg.has_kernel("nonzero")  # listed as falling back to the CPU
    assert not reg.has_kernel("npu_rotary_mul")  # npu:: custom op, not ATen


def test_wheel_header_and_refresh_script_round_trip(tmp_path: Path) -> None:
    wheel = _fake_wheel(tmp_path)
    reg = load_registry(wheel)
    assert reg.version == "9.9.9" and reg.source == wheel.name
    assert reg.sha256 == hashlib.sha256(wheel.read_bytes()).hexdigest()
    out = tmp_path / "ops.json"
    subprocess.run([sys.executable, str(REPO / "scripts" / "refresh_npu_registry.py"),
                    str(wheel), "-o", str(out)], check=True, cwd=REPO, capture_output=True)
    data = json.loads(out.read_text())
    assert data["sha256"] == reg.sha256 and data["version"] == "9.9.9"
    assert data["date"] == reg.date and data["ops"] == sorted(reg.ops)
    again = load_registry(out)
    assert again.ops == reg.ops and again.header() == reg.header()


def test_installed_package_directory(tmp_path: Path) -> None:
    pkg = tmp_path / "torch_npu"
    (pkg / "csrc" / "aten").mkdir(parents=True)
    (pkg / "csrc" / "aten" / "npu_native_functions.yaml").write_text(BASE_YAML)
    (pkg / "csrc" / "aten" / "npu_native_functions_by_codegen.yaml").write_text(CODEGEN_YAML)
    (pkg / "version.py").write_text("__version__ = '9.9.9'\n")
    reg = registry_from_installed(pkg)
    assert reg.ops == load_registry(_fake_wheel(tmp_path)).ops
    assert reg.version == "9.9.9" and reg.source.startswith("installed:")


def test_bad_sources_raise(tmp_path: Path) -> None:
    bad = tmp_path / "x.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(FormatError, match="cannot read torch_npu wheel"):
        load_registry(bad)
    with pytest.raises(FormatError, match="not a torch_npu wheel"):
        load_registry(tmp_path / "nothing.bin")
