"""Generic path: a frozen TF1 graph with no clean definition -> tf2onnx -> porter's ONNX
converter, verified against the TensorFlow session (not against the intermediate ONNX)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import porter
from porter.importers.tf1 import to_onnx
from porter.verification.parity import random_cases, run_parity
from porter.verification.runtimes.child import ChildRuntime
from porter.verification.runtimes.torch_ import TorchRunner


@pytest.mark.slow
def test_frozen_graph_through_onnx_matches_tensorflow(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["frozen"]["path"])
    model = to_onnx(src, outputs=["logits:0", "prob:0"])
    assert [i.name for i in model.graph.input] == ["input:0"]
    module = porter.convert_onnx(model).eval()
    # tf2onnx keeps TF's NHWC interface, so both sides run NHWC ("layout": "none")
    cases = random_cases("x", [(1, 17, 23, 3), (2, 32, 32, 3)], seed=5)
    with ChildRuntime("porter.verification.runtimes.tf1:frozen", {
            "graph": exp["frozen"]["path"], "inputs": {"x": "input:0"},
            "outputs": {"logits": "logits:0", "prob": "prob:0"}, "layout": "none"}) as ref:
        report = run_parity(ref, TorchRunner(module, ["x"], ["logits", "prob"]), cases,
                            reference_name="tensorflow", candidate_name="torch-cpu")
    assert report.passed and report.worst() < 1e-5, report.lines()
    x, logits, _ = exp["frozen"]["runs"][0]
    with torch.no_grad():
        ours = module(torch.from_numpy(x))[0].numpy()
    assert np.abs(ours - logits).max() < 1e-5
