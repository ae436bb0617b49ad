"""porter.graphs.modnet ported from ONNX exports of itself (opsets 11 and 17), checked by onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import porter
from porter import graphs
from porter.graphs.modnet import MODNet, preprocess
from porter.verification.runtimes.onnxruntime import OrtRunner


@pytest.mark.parametrize("opset", [11, 17])
def test_port_own_export_matches_onnxruntime(modnet_onnx, opset):
    path, original = modnet_onnx(opset)
    source = porter.open(path)
    port = graphs.get_port("modnet")
    assert port.matches(source)
    ported = port.port(source)
    counts = ported.mapping.counts()
    assert counts["accounted"] == len(source.tensors)
    # Every parameter/buffer of the original comes back exactly where BatchNorm was not folded.
    restored = ported.module.state_dict()
    for name, value in original.state_dict().items():
        if "lr_branch" in name or "hr_branch" in name or "f_branch" in name:
            assert torch.equal(restored[name], value), name
    ort = OrtRunner(path)
    for shape, seed in (((1, 3, 64, 96), 0), ((2, 3, 128, 64), 1)):
        x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            got = ported.module(torch.from_numpy(x)).numpy()
            want_torch = original(torch.from_numpy(x)).numpy()
        want = ort({"input": x})["output"]
        assert got.shape == (shape[0], 1, *shape[2:])
        assert np.abs(got - want).max() <= 1e-4
        assert np.abs(got - want_torch).max() <= 1e-4


@pytest.mark.parametrize("hr", [16, 48])
def test_other_detail_widths_build_and_port(tmp_path, hr):
    """hr_channels other than 32: the 1/4-scale conv takes 2*hr + 32 + 3 channels (upstream's
    3*hr + 3 holds only at 32); an export of such a model is recognised and ported exactly."""
    import warnings

    gen = torch.Generator().manual_seed(hr)
    module = MODNet(hr_channels=hr).eval()
    with torch.no_grad():  # distinct values everywhere (default BatchNorm stats fold alike)
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=gen) * 0.2)
    path = tmp_path / f"modnet_hr{hr}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, 3, 64, 64),), str(path), opset_version=11,
                          dynamo=False, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {2: "h", 3: "w"}, "output": {2: "h", 3: "w"}})
    source = porter.open(path)
    port = graphs.get_port("modnet")
    assert port.matches(source)
    ported = port.port(source)
    assert ported.kwargs["hr_channels"] == hr
    x = np.random.default_rng(hr).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        got = ported.module(torch.from_numpy(x)).numpy()
    assert np.abs(got - OrtRunner(path)({"input": x})["output"]).max() <= 1e-4


def test_folded_export_is_unfolded_exactly(modnet_onnx):
    path, original = modnet_onnx(11)
    ported = graphs.get_port("modnet").port(porter.open(path))
    bn = ported.module.backbone.model.features[0][1]
    assert torch.all(bn.weight == 1) and torch.all(bn.running_mean == 0)
    assert torch.all(bn.running_var + bn.eps == 1.0)
    assert any("folded" in note for note in ported.mapping.notes)


def test_output_is_alpha_in_unit_range():
    torch.manual_seed(0)
    m = MODNet().eval()
    with torch.no_grad():
        y = m(torch.randn(2, 3, 64, 64))
    assert y.shape == (2, 1, 64, 64)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_preprocess_scales_and_rounds_to_multiples_of_32():
    img = np.full((50, 70, 3), 255, np.uint8)
    x = preprocess(img)
    assert x.shape == (1, 3, 64, 64)
    assert torch.allclose(x, torch.ones_like(x))
    with pytest.raises(ValueError):
        preprocess(np.zeros((8, 8), np.uint8))
