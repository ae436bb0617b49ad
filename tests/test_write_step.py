"""Writing an output costs the safetensors file and the manifest; checking the generated
``model.py`` (two forward passes on the smallest case) is its own, separately timed step."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import porter.pipeline as pipeline
from porter.converters.module import OnnxModule
from porter.verification.runtimes.onnxruntime import OrtRunner
from porter.zoo.load import load_output


class SevenHeads(nn.Module):
    """A multi-output network (as salient-object and detection nets are)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleList(nn.Conv2d(8, 1, 1) for _ in range(7))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = torch.relu(self.stem(x))
        return tuple(torch.sigmoid(h(y)) for h in self.heads)


@pytest.fixture(scope="module")
def seven_onnx(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("seven") / "seven.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(SevenHeads().eval(), (torch.zeros(1, 3, 16, 16),), str(path),
                          dynamo=False, opset_version=17, input_names=["x"],
                          output_names=[f"d{i}" for i in range(7)],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}})
    return path


@pytest.mark.slow
def test_write_runs_no_forward_and_the_source_check_runs_the_plan_once(seven_onnx, tmp_path,
                                                                      monkeypatch) -> None:
    runs: list[tuple[str, tuple, bool]] = []
    phase = ["verify"]
    real_run = OnnxModule._run

    def counting_run(self, args, record=None, fast=True):
        runs.append((phase[0], tuple(args[0].shape), fast))
        return real_run(self, args, record, fast)

    real_files, real_write = pipeline.ported_files, pipeline.write_output

    def files(ported):
        phase[0] = "source"
        return real_files(ported)

    def write(*a, **k):
        phase[0] = "write"
        return real_write(*a, **k)

    monkeypatch.setattr(OnnxModule, "_run", counting_run)
    monkeypatch.setattr(pipeline, "ported_files", files)
    monkeypatch.setattr(pipeline, "write_output", write)
    out = tmp_path / "out"
    result = pipeline.convert(seven_onnx, to="torch", verify="cpu", out=out)
    assert [r for r in runs if r[0] == "write"] == []  # writing never runs the model
    # the generated model.py is checked against the plain plan once, on the smallest case
    smallest = min((c["shapes"]["x"] for c in result.manifest["parity"]["cases"]),
                   key=lambda s: int(np.prod(s)))
    assert [r for r in runs if r[0] == "source"] == [("source", tuple(smallest), False)]
    assert {"source", "write"} <= set(result.manifest["timings_s"])
    # and the output is complete: 7 outputs, each reloaded and equal to onnxruntime
    loaded = load_output(out, trust_code=True)
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 20, 12)).astype(np.float32)
    ref = OrtRunner(seven_onnx)({"x": x})
    with torch.no_grad():
        got = loaded(torch.from_numpy(x))
    assert len(got) == 7
    for i, g in enumerate(got):
        assert np.abs(ref[f"d{i}"] - g.numpy()).max() < 1e-6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["weights"]["tensors"] == len(loaded.state_dict())
