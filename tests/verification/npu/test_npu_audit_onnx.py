"""`--verify npu` on a generic ONNX conversion whose graph computes shapes at run time.

The fixture is a PyTorch export with dynamic batch / H / W: ``Shape -> Gather -> Unsqueeze ->
Concat -> Reshape`` chains rebuild the feature map's shape, as most real exports do.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from porter.converters import convert_onnx
from porter.verification.npu import audit_module, load_registry

REGISTRY = load_registry()


class ShapeChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.relu(self.c1(x))
        n, c, h, w = y.shape
        z = y.reshape(n, c, h * w).permute(0, 2, 1)  # tokens, then back to a map
        z = z.reshape(n, h, w, c).permute(0, 3, 1, 2)
        return self.c2(z), z.flatten(1).mean(1)


@pytest.fixture(scope="module")
def shape_chain_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("shape_chain") / "shape_chain.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(ShapeChain().eval(), (torch.randn(1, 3, 16, 20),), str(path),
                          dynamo=False, opset_version=13, input_names=["x"],
                          output_names=["y", "m"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    return path


def test_fixture_has_shape_chains_and_dynamic_hw(shape_chain_onnx: Path) -> None:
    model = onnx.load(shape_chain_onnx)
    ops = [n.op_type for n in model.graph.node]
    assert {"Shape", "Gather", "Concat", "Reshape"} <= set(ops) and ops.count("Shape") >= 3
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["n", "", "h", "w"]


def test_shape_chain_module_matches_onnxruntime_and_audits_clean(shape_chain_onnx: Path) -> None:
    module = convert_onnx(shape_chain_onnx)
    sess = ort.InferenceSession(str(shape_chain_onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 16, 20), (2, 3, 24, 12)]:  # the H/W the graph was exported at, and others
        x = rng.standard_normal(shape).astype(np.float32)
        ref = sess.run(None, {"x": x})
        with torch.no_grad():
            got = module(torch.from_numpy(x))
        for r, g in zip(ref, got):
            assert r.shape == tuple(g.shape)
            assert np.abs(r - g.numpy()).max() < 1e-5
    report = audit_module(module, (torch.randn(1, 3, 16, 20),), registry=REGISTRY)
    json.dumps(report)
    assert report["passed"] and report["missing"] == []
    assert report["capture"] == "torch.export"  # shape arithmetic no longer blocks the export
    ops = {o["op"]: o for o in report["ops"]}
    assert ops["aten::conv2d"]["count"] == 2 and ops["aten::conv2d"]["modules"] == ["c1", "c2"]
    assert ops["aten::reshape"]["count"] == 3 and ops["aten::permute"]["count"] == 2
    # no shape tensors: Shape/Gather/Concat ran on python ints, not as ATen ops
    assert not {"aten::cat", "aten::_shape_as_tensor", "aten::_local_scalar_dense"} & set(ops)


def _leaves(report: dict) -> set[str]:
    out: set[str] = set()
    for rec in report["ops"]:
        out |= set(rec["via"]) if rec["status"] == "decomposed" else {rec["op"]}
    return out


def test_dispatch_capture_of_the_onnx_module_names_graph_steps(shape_chain_onnx: Path) -> None:
    module = convert_onnx(shape_chain_onnx)
    x = torch.randn(1, 3, 16, 20)
    exported = audit_module(module, (x,), registry=REGISTRY)
    dispatched = audit_module(module, (x,), registry=REGISTRY, capture="dispatch")
    assert _leaves(dispatched) == _leaves(exported) == {
        "aten::convolution", "aten::relu", "aten::view", "aten::as_strided", "aten::mean.dim"}
    where = {o["op"]: o["modules"] for o in dispatched["ops"]}
    assert where["aten::convolution"] == ["c1", "c2"]  # weights' modules
    assert where["aten::view"] == ["reshape_0", "reshape_1", "flatten_0"]  # graph steps
    assert where["aten::permute"] == ["transpose_0", "transpose_1"]
    assert module.step_observer is None  # the audit leaves the module as it found it


def test_shape_chain_exports_with_symbolic_hw(shape_chain_onnx: Path) -> None:
    from torch.export import Dim

    from porter.generic import declared_dynamic, onnx_io

    module = convert_onnx(shape_chain_onnx)
    assert [st.symbolic is not None for st in module._steps if st.op_type == "Shape"] == [True] * 4
    inputs, _ = onnx_io(onnx.load(shape_chain_onnx))
    spec = declared_dynamic(inputs)
    assert spec == ({0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO},)
    with torch.no_grad():
        ep = torch.export.export(module, (torch.randn(2, 3, 16, 20),), dynamic_shapes=(spec,))
    dims = [d for n in ep.graph.nodes if n.op == "placeholder" and n.name.startswith("args")
            for d in n.meta["val"].shape]
    assert [isinstance(d, torch.SymInt) for d in dims] == [True, False, True, True]
    # the exported program itself runs at other sizes and matches onnxruntime
    sess = ort.InferenceSession(str(shape_chain_onnx), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 28)).astype(np.float32)
    ref = sess.run(None, {"x": x})
    got = ep.module()(torch.from_numpy(x))
    for r, g in zip(ref, got):
        assert r.shape == tuple(g.shape) and np.abs(r - g.detach().numpy()).max() < 1e-5


@pytest.mark.slow
def test_cli_convert_verify_npu_writes_the_audit(shape_chain_onnx: Path, tmp_path: Path) -> None:
    from porter.cli.main import main

    out = tmp_path / "out"
    assert main(["convert", str(shape_chain_onnx), "--to", "torch", "--verify", "npu",
                 "--out", str(out), "-q"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    npu = manifest["npu"]
    assert npu["passed"] and npu["device"] == "audit" and npu["missing"] == []
    # by default the parity forward of the smallest case is the capture: no separate export
    smallest = min(manifest["parity"]["cases"], key=lambda c: np.prod(c["shapes"]["x"]))
    assert npu["capture"] == "dispatch"
    assert npu["capture_notes"] == [f"dispatch: the ATen ops the parity forward of case "
                                    f"{smallest['name']} dispatched (inference mode)"]
    assert manifest["parity"]["passed"] and manifest["parity"]["worst_max_abs"] < 1e-5
    assert (out / "model.safetensors").is_file()
    # --npu-capture export: torch.export with the declared dynamic dims; the same ops judged
    out2 = tmp_path / "out2"
    assert main(["convert", str(shape_chain_onnx), "--to", "torch", "--verify", "npu",
                 "--npu-capture", "export", "--out", str(out2), "-q"]) == 0
    exported = json.loads((out2 / "manifest.json").read_text())["npu"]
    assert exported["capture"] == "torch.export" and exported["passed"]
    assert exported["capture_notes"] == ["torch.export: dynamic dims args_0[2], args_0[3]"]
    # export adds its own input checks (aten::_assert_tensor_metadata); the rest is the same
    assert {o["op"] for o in exported["ops"]} - {"aten::_assert_tensor_metadata"} == \
        {o["op"] for o in npu["ops"]}
