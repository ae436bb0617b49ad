"""MTCNN P-Net port on a random-weight P-Net checkpoint that TensorFlow wrote (in a child)."""

from __future__ import annotations

import numpy as np
import pytest

import porter
from porter.errors import MappingError
from porter.graphs import find_ports, get_port
from porter.graphs.mtcnn import PNET_OUTPUTS, PNet
from porter.verification.parity import random_cases, run_parity
from porter.verification.runtimes.torch_ import TorchRunner


def test_pnet_port_from_random_tf_checkpoint(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["pnet"]["prefix"])
    port = get_port("mtcnn_pnet")
    assert [p.name for p in find_ports(src)] == ["mtcnn_pnet"]
    ported = port.port(src)
    counts = ported.mapping.counts()
    assert (counts["mapped"], counts["dropped"]) == (15, 16)  # 15 Momentum slots + global_step
    w = ported.module.state_dict()["conv2.weight"].numpy()
    np.testing.assert_array_equal(w, exp["pnet"]["tensors"]["conv2/weights"].transpose(3, 2, 0, 1))
    cases = port.cases(src, ported)
    assert [c.shapes()["image"] for c in cases] == [[8, 3, 12, 12]]  # the MetaGraph's input
    reference = port.reference(src, ported)
    try:
        report = run_parity(reference, TorchRunner(ported.module, ["image"], PNET_OUTPUTS),
                            cases, tolerance=port.tolerance, reference_name="tensorflow",
                            candidate_name="torch-cpu")
    finally:
        reference.close()
    assert report.passed and report.worst() < 1e-5, report.lines()
    assert set(report.cases[0]["outputs"]) == set(PNET_OUTPUTS)


def test_keep_optimizer_state_on_request(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["pnet"]["prefix"])
    with pytest.raises(MappingError, match="15 source tensor"):
        get_port("mtcnn_pnet").port(src, keep=("Momentum",))


def test_other_checkpoints_do_not_match(tf1_fixtures):
    _, exp = tf1_fixtures
    assert not get_port("mtcnn_pnet").matches(porter.open(exp["mixed"]["prefix"]))


def test_pnet_output_sizes():
    import torch

    net = PNet().eval()
    with torch.no_grad():
        outs = net(torch.from_numpy(random_cases("image", [(2, 3, 37, 50)])[0].inputs["image"]))
    # h = ceil((37 - 2) / 2) - 4 = 14, w = ceil((50 - 2) / 2) - 4 = 20
    assert [tuple(o.shape) for o in outs] == [(2, 2, 14, 20), (2, 4, 14, 20), (2, 10, 14, 20)]
    assert torch.allclose(outs[0].sum(1), torch.ones(2, 14, 20))


# ------------------------------------------------------------------------- R-Net and O-Net

REFINE = {"rnet": ("mtcnn_rnet", 24, 17, 18), "onet": ("mtcnn_onet", 48, 20, 21)}


@pytest.mark.parametrize("which", sorted(REFINE))
def test_refine_port_matches_tensorflow(tf1_fixtures, which):
    """R-Net / O-Net checkpoints with the published names: auto-matched, exact mapping, parity
    against the restored MetaGraph and against the graph rebuilt in TF at other batch sizes."""
    from porter.verification.runtimes.child import ChildRuntime

    _, exp = tf1_fixtures
    name, size, mapped, dropped = REFINE[which]
    src = porter.open(exp[which]["prefix"])
    assert [p.name for p in find_ports(src)] == [name]
    port = get_port(name)
    ported = port.port(src)
    counts = ported.mapping.counts()
    # every weight, bias and alpha maps; each trainable one has a Momentum slot; + step counter
    assert (counts["mapped"], counts["dropped"]) == (mapped, dropped)
    state = ported.module.state_dict()
    np.testing.assert_array_equal(state["fc1.weight"].numpy(),
                                  exp[which]["tensors"]["fc1/weights"].T)
    np.testing.assert_array_equal(state["conv2.weight"].numpy(),
                                  exp[which]["tensors"]["conv2/weights"].transpose(3, 2, 0, 1))
    cases = port.cases(src, ported)
    assert [c.shapes()["image"] for c in cases] == [[6, 3, size, size]]
    candidate = TorchRunner(ported.module, ["image"], PNET_OUTPUTS)
    reference = port.reference(src, ported)
    try:
        report = run_parity(reference, candidate, cases, tolerance=port.tolerance,
                            reference_name="tensorflow", candidate_name="torch-cpu")
    finally:
        reference.close()
    assert report.passed and report.worst() < 1e-5, report.lines()
    others = random_cases("image", [(1, 3, size, size), (5, 3, size, size)], seed=3)
    with ChildRuntime("porter.verification.runtimes.tf1:rebuilt", {
            "builder": f"porter.graphs.mtcnn:{which}_tf1",
            "checkpoint": exp[which]["prefix"]}) as rebuilt:
        report = run_parity(rebuilt, candidate, others, tolerance=port.tolerance,
                            reference_name="tensorflow", candidate_name="torch-cpu")
    assert report.passed and report.worst() < 1e-5, report.lines()


def test_stages_refuse_each_others_checkpoints(tf1_fixtures):
    _, exp = tf1_fixtures
    pnet = porter.open(exp["pnet"]["prefix"])
    assert not get_port("mtcnn_rnet").matches(pnet)
    assert not get_port("mtcnn_onet").matches(porter.open(exp["rnet"]["prefix"]))
    with pytest.raises(MappingError):
        get_port("mtcnn_rnet").port(pnet)


@pytest.mark.parametrize("model", ["RNet", "ONet"])
def test_refine_output_shapes(model):
    import torch

    from porter.graphs import mtcnn

    cls = getattr(mtcnn, model)
    with torch.no_grad():
        outs = cls().eval()(torch.zeros(3, 3, cls.size, cls.size))
    assert [tuple(o.shape) for o in outs] == [(3, 2), (3, 4), (3, 10)]
    assert torch.allclose(outs[0].sum(1), torch.ones(3))
