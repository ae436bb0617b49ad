"""Issue 11, "Why" 2: the Python API works on its second call and hides no parameters."""

from __future__ import annotations

import inspect

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import porter
from porter.verification.runtimes.onnxruntime import OrtRunner


def _conv(path, seed):
    w = numpy_helper.from_array(
        np.random.default_rng(seed).normal(size=(2, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 8])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    return path


@pytest.fixture()
def two_models(tmp_path):
    return _conv(tmp_path / "a.onnx", 0), _conv(tmp_path / "b.onnx", 1)


def test_every_entry_point_twice_in_one_process(tmp_path, two_models):
    import porter.converters  # noqa: F401 - importing subpackages must not replace functions
    import porter.verification.parity  # noqa: F401

    x = np.random.default_rng(3).normal(size=(1, 3, 8, 8)).astype(np.float32)
    for i, path in enumerate(two_models):
        src = porter.open(path)
        assert src.format == "onnx" and src.tensors["w"].shape == (2, 3, 3, 3)
        report = porter.verify(path)
        assert report["passed"] and report["reference"] == "onnxruntime"
        result = porter.convert(path, out=tmp_path / f"out{i}")
        assert result.out == tmp_path / f"out{i}" and result.manifest["parity"]["passed"]
        entry = porter.publish(result.out, zoo=tmp_path / "zoo")
        assert entry.ref == f"{path.stem}@1" and entry.zoo == str(tmp_path / "zoo")
        for where in (result.out, path.stem):
            module = porter.load(where, zoo=tmp_path / "zoo", trust_code=True)
            with torch.no_grad():
                got = module(torch.from_numpy(x)).numpy()
            np.testing.assert_allclose(got, OrtRunner(path)({"x": x})["y"], atol=1e-5)
    assert callable(porter.verify) and callable(porter.convert)


def test_signatures_are_explicit_and_documented():
    for fn in (porter.open, porter.convert, porter.verify, porter.publish, porter.load):
        sig = inspect.signature(fn)
        assert not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()), fn
        assert fn.__doc__ and sig.return_annotation is not inspect.Signature.empty, fn
    params = inspect.signature(porter.convert).parameters
    assert {"to", "graph", "verify", "out", "publish", "force", "report", "tolerance"} <= set(params)


def test_generated_code_needs_trust_or_a_pinned_digest(tmp_path, two_models):
    from porter.errors import TrustError
    from porter.source import sha256_file

    out = porter.convert(two_models[0], out=tmp_path / "o").out
    with pytest.raises(TrustError, match="trust_code=True"):
        porter.load(out)
    digest = sha256_file(out / "model.py")
    assert porter.load(out, code_sha256=digest) is not None
    with pytest.raises(TrustError, match="not the pinned"):
        porter.load(out, code_sha256="0" * 64)


def test_clean_graphs_live_under_porters_namespace():
    from porter.graphs.modnet import MODNet

    assert MODNet.__module__ == "porter.graphs.modnet"
    # the wheel holds porter/ only (no top-level `graphs` that can clash): tests/test_wheel.py
