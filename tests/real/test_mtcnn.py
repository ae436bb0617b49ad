"""The real MTCNN P-Net (AITTSMD/MTCNN-Tensorflow PNet-18) against TensorFlow, in children."""

from __future__ import annotations

from pathlib import Path

import pytest

import porter
from porter.graphs import get_port
from porter.graphs.mtcnn import PNET_OUTPUTS
from porter.verification.parity import random_cases, run_parity
from porter.verification.runtimes.child import ChildRuntime
from porter.verification.runtimes.torch_ import TorchRunner

PNET = Path(__file__).resolve().parents[3] / "shared" / "models" / "mtcnn_pnet" / "PNet-18"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(f"{PNET}.index").is_file(),
                       reason=f"real model not present: {PNET}.index (../shared/models)"),
]


@pytest.fixture(scope="module")
def ported():
    src = porter.open(PNET)
    port = get_port("mtcnn_pnet")
    assert port.matches(src)
    return src, port, port.port(src)


def test_real_pnet_mapping(ported):
    _, _, p = ported
    c = p.mapping.counts()
    assert (c["source_tensors"], c["mapped"], c["dropped"]) == (31, 15, 16)
    dropped = {e.source for e in p.mapping.entries if e.action == "dropped"}
    assert "Variable" in dropped and sum(s.endswith("/Momentum") for s in dropped) == 15


def test_real_pnet_against_its_metagraph(ported):
    src, port, p = ported
    cases = port.cases(src, p)
    assert [c.shapes()["image"] for c in cases] == [[256, 3, 12, 12]]
    ref = port.reference(src, p)
    try:
        report = run_parity(ref, TorchRunner(p.module, ["image"], PNET_OUTPUTS), cases,
                            tolerance=port.tolerance, reference_name="tensorflow",
                            candidate_name="torch-cpu")
    finally:
        ref.close()
    assert report.passed and report.worst() < 1e-5, report.lines()


def test_real_pnet_other_sizes_against_rebuilt_tf_graph(ported):
    """Fully convolutional: other image sizes against P-Net rebuilt in TF from the checkpoint."""
    _, port, p = ported
    cases = random_cases("image", [(1, 3, 12, 12), (2, 3, 37, 50), (1, 3, 97, 64),
                                   (1, 3, 13, 13)], seed=7)
    with ChildRuntime("porter.verification.runtimes.tf1:rebuilt", {
            "builder": "porter.graphs.mtcnn:pnet_tf1", "checkpoint": str(PNET)}) as ref:
        report = run_parity(ref, TorchRunner(p.module, ["image"], PNET_OUTPUTS), cases,
                            tolerance=port.tolerance, reference_name="tensorflow",
                            candidate_name="torch-cpu")
    assert report.passed and report.worst() < 1e-5, report.lines()
    assert [c["shapes"]["image"][2:] for c in report.cases] == [[12, 12], [37, 50], [97, 64],
                                                                [13, 13]]
