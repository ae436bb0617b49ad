"""The conversion pipeline: verified outputs that reload exactly, nothing written on failure."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from porter.errors import MappingError, ParityError
from porter.pipeline import convert
from porter.verification.runtimes.onnxruntime import OrtRunner
from porter.zoo.load import load_output


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(torch.relu(self.bn(self.conv(x)))))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory):
    torch.manual_seed(0)
    m = Small().eval()
    with torch.no_grad():
        m.bn.running_mean.normal_()
        m.bn.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False,
                          opset_version=17, input_names=["image"], output_names=["mask"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}})
    return path


def test_generic_convert_writes_a_verified_output_that_reloads(small_onnx, tmp_path):
    out = tmp_path / "out"
    result = convert(small_onnx, out=out, verify="cpu")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["graph"]["class"] == "model.py:Model"
    assert manifest["parity"]["passed"] and manifest["parity"]["reference"] == "onnxruntime"
    assert len(manifest["parity"]["cases"]) == 2  # batch 1 and batch 2
    assert manifest["weights"]["sha256"] and manifest["source"]["sha256"]
    assert "model.py" in {p.name for p in out.iterdir()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    module = load_output(out, trust_code=True)
    x = np.random.default_rng(5).uniform(-1, 1, (3, 3, 24, 40)).astype(np.float32)
    with torch.no_grad():
        got = module(torch.from_numpy(x))
    want = OrtRunner(small_onnx)({"image": x})["mask"]
    assert np.abs(got.numpy() - want).max() <= 1e-5
    assert result.timings["total"] > 0


def test_failed_parity_writes_nothing(small_onnx, tmp_path, monkeypatch):
    import porter.converters as conv

    real = conv.convert_onnx

    def broken(model):
        module = real(model)
        with torch.no_grad():
            next(p for p in module.parameters() if p.ndim == 4).mul_(1.01)
        return module

    monkeypatch.setattr(conv, "convert_onnx", broken)
    out = tmp_path / "out"
    with pytest.raises(ParityError, match="parity failed"):
        convert(small_onnx, out=out, verify="cpu")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_source_that_does_not_fit_the_graph(small_onnx, tmp_path):
    with pytest.raises(MappingError):
        convert(small_onnx, graph="modnet", out=tmp_path / "o", verify="none")
    assert not (tmp_path / "o").exists()


def test_rewriting_an_output_replaces_it_atomically(small_onnx, tmp_path):
    out = tmp_path / "out"
    convert(small_onnx, out=out, verify="none")
    (out / "stale.txt").write_text("old")
    convert(small_onnx, out=out, verify="none")
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_image_input_case_matches_onnxruntime(modnet_onnx, tmp_path):
    """--input IMAGE: a real picture, preprocessed by the graph's own preprocess()."""
    from PIL import Image

    import porter
    from porter import graphs
    from porter.pipeline import _image_case

    path, _ = modnet_onnx(11)
    ported = graphs.get_port("modnet").port(porter.open(path))
    yy, xx = np.mgrid[0:90, 0:130]
    rgb = np.stack([xx * 2 % 256, yy * 3 % 256, (xx + yy) % 256], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "pic.png")
    case = _image_case(tmp_path / "pic.png", ported)
    x = case.inputs["input"]
    assert x.shape == (1, 3, 96, 128) and x.min() >= -1.0 and x.max() <= 1.0
    with torch.no_grad():
        got = ported.module(torch.from_numpy(x)).numpy()
    assert np.abs(got - OrtRunner(path)({"input": x})["output"]).max() <= 1e-4
    (tmp_path / "bad.png").write_bytes(b"not an image")
    from porter.errors import FormatError

    with pytest.raises(FormatError, match="not a readable image"):
        _image_case(tmp_path / "bad.png", ported)


def test_torch_source_output_runs_in_a_fresh_interpreter(small_onnx, tmp_path):
    """model.py + model.safetensors load without porter, in a new process, and match."""
    import subprocess
    import sys

    out = tmp_path / "src"
    convert(small_onnx, to="torch-source", out=out, verify="cpu")
    x = np.random.default_rng(9).uniform(-1, 1, (2, 3, 20, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = f"""
import sys, importlib.util, numpy as np, torch
from safetensors.torch import load_file
spec = importlib.util.spec_from_file_location("generated", r"{out / 'model.py'}")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
m = mod.Model(); m.load_state_dict(load_file(r"{out / 'model.safetensors'}")); m.eval()
with torch.no_grad():
    y = m(torch.from_numpy(np.load(r"{tmp_path / 'x.npy'}")))
np.save(r"{tmp_path / 'y.npy'}", y.numpy())
assert "porter" not in sys.modules and "onnx" not in sys.modules
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = OrtRunner(small_onnx)({"image": x})["mask"]
    assert np.abs(np.load(tmp_path / "y.npy") - want).max() <= 1e-5
