"""BSHM ported from a TF1 checkpoint and a frozen GraphDef, checked against TensorFlow itself.

The TF1 source is built by scripts/build_bshm_tf1.py in a child process (TensorFlow never runs in
the pytest process); its session outputs are the reference.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import porter
from porter import graphs
from porter.errors import MappingError
from porter.graphs.bshm import BSHM, BSHM_FROM_TF1, port_bshm
from porter.verification.parity import run_parity
from porter.verification.runtimes.torch_ import TorchRunner

ROOT = Path(__file__).resolve().parents[2]
SIZES = ("1x3x64x64", "2x3x96x128", "1x3x50x70")  # the odd size exercises SAME's odd pixel
CHANNELS = (4, 3, 5)  # MPN, QUN, MRN: distinct so a swapped width cannot pass
TOL = 1e-4
SOURCES = {"checkpoint": "bshm.ckpt", "metagraph": "bshm.ckpt.meta", "frozen": "bshm_frozen.pb"}


@pytest.fixture(scope="session")
def bshm_tf1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bshm_tf1")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_bshm_tf1.py"), str(out), "--sizes",
         *SIZES, "--channels", *map(str, CHANNELS), "--seed", "7"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def reference(bshm_tf1: Path) -> dict[str, np.ndarray]:
    return dict(np.load(bshm_tf1 / "reference.npz"))


@pytest.fixture(scope="session")
def ported(bshm_tf1: Path) -> dict[str, graphs.Ported]:
    return {kind: port_bshm(porter.open(bshm_tf1 / name)) for kind, name in SOURCES.items()}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kind", list(SOURCES))
def test_parity_with_tf_session(ported: dict, reference: dict, kind: str, size: str) -> None:
    module = ported[kind].module
    with torch.inference_mode():
        out = module.stages(torch.from_numpy(reference[f"{size}/image"]))
    for name in ("coarse_mask", "unified_mask", "alpha"):
        ref = reference[f"{size}/{name}"]
        assert out[name].shape == ref.shape
        assert ref.std() > 1e-2, f"{name}: reference is flat, the comparison would be weak"
        err = float(np.abs(out[name].numpy() - ref).max())
        assert err <= TOL, f"{kind} {size} {name}: max|Δ| {err:.3e}"


def test_widths_and_epsilon_inferred(ported: dict) -> None:
    for p in ported.values():
        widths = {k: v for k, v in p.kwargs.items() if k != "bn_eps"}
        assert widths == dict(zip(("mpn_channels", "qun_channels", "mrn_channels"), CHANNELS))
        assert np.float32(p.kwargs["bn_eps"]) == np.float32(1e-3)  # TF's, not torch's 1e-5
        bns = [m for m in p.module.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(m.eps == p.kwargs["bn_eps"] for m in bns)
        # rebuilding from the recorded kwargs gives a module the same state loads into
        BSHM(**p.kwargs).load_state_dict(p.module.state_dict(), strict=True)


def test_torch_default_epsilon_would_break_parity(ported: dict, reference: dict) -> None:
    p = ported["checkpoint"]
    module = BSHM(**{**p.kwargs, "bn_eps": 1e-5})
    module.load_state_dict(p.module.state_dict())
    size = "2x3x96x128"
    with torch.inference_mode():
        alpha = module.eval()(torch.from_numpy(reference[f"{size}/image"])).numpy()
    assert float(np.abs(alpha - reference[f"{size}/alpha"]).max()) > TOL


def test_registered_port_against_tensorflow_runtime(bshm_tf1: Path) -> None:
    """The registered port end to end: matches, port, cases, TF reference in a child process."""
    port = graphs.get_port("bshm")
    for name in ("bshm.ckpt", "bshm_frozen.pb"):
        source = porter.open(bshm_tf1 / name)
        assert port in graphs.find_ports(source)
        p = port.port(source)
        ref = port.reference(source, p)
        try:
            report = run_parity(ref, TorchRunner(p.module, p.input_names, p.output_names),
                                port.cases(source, p), tolerance=port.tolerance,
                                reference_name=port.reference_name, candidate_name="torch-cpu")
        finally:
            ref.close()
        assert report.passed, "\n".join(report.lines())
        assert report.worst("max_abs") <= TOL
        assert len(report.cases) == 3


def test_training_state_dropped_with_reasons(bshm_tf1: Path, ported: dict) -> None:
    source = porter.open(bshm_tf1 / "bshm.ckpt")
    report = ported["checkpoint"].mapping
    by_source = {e.source: e for e in report.entries if e.source is not None}
    assert set(by_source) == set(source.tensors)  # every source tensor accounted for
    kinds = source.meta["variable_kinds"]
    trainable = [n for n in source.tensors if n.endswith(("kernel", "bias", "gamma", "beta"))]
    slots = [n for n in source.tensors if n.endswith(("/Adam", "/Adam_1"))]
    assert len(slots) == 2 * len(trainable) > 0
    for name in [*slots, "beta1_power", "beta2_power", "global_step"]:
        entry = by_source[name]
        assert entry.action == "dropped" and entry.note, name
        assert kinds[name] in ("optimizer", "step"), name
    weights = [n for n, k in kinds.items() if k == "weight"]
    assert all(by_source[n].action == "mapped" for n in weights)
    state = ported["checkpoint"].module.state_dict()
    assert report.counts()["mapped"] == len(
        [k for k in state if not k.endswith("num_batches_tracked")]) == len(weights)
    # the frozen graph has no training state: its preprocessing constants are checked instead
    frozen = ported["frozen"].mapping
    assert {e.source for e in frozen.entries if e.action == "structure"} == {
        "preprocess/mean", "preprocess/std"}
    assert frozen.counts()["dropped"] == 0


def test_kernel_layout_hwio_to_oihw(bshm_tf1: Path, ported: dict) -> None:
    source = porter.open(bshm_tf1 / "bshm.ckpt")
    hwio = source.tensors["mrn/enc2/conv1/kernel"].numpy()
    oihw = ported["checkpoint"].module.mrn.enc2.conv1.conv.weight.detach().numpy()
    assert hwio.shape == (3, 3, CHANNELS[2], 2 * CHANNELS[2])
    np.testing.assert_array_equal(oihw, hwio.transpose(3, 2, 0, 1))


def test_strided_units_pad_odd_pixel_at_end() -> None:
    unit = BSHM(*CHANNELS).mrn.enc2.conv1
    y = unit.pad(torch.ones(1, 1, 6, 7))  # 6 -> total 1 (0 before, 1 after); 7 -> (1, 1)
    assert y.shape == (1, 1, 7, 9)
    assert float(y[0, 0, 0, 1:-1].sum()) == 7 and float(y[0, 0, -1].sum()) == 0
    assert float(y[0, 0, 1:-1, 0].sum()) == 0 and float(y[0, 0, 1:-1, -1].sum()) == 0


def _arrays(source: porter.Source) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.numpy()) for k, v in source.tensors.items()}


def test_shape_mismatch_is_a_mapping_error(bshm_tf1: Path) -> None:
    arrays = _arrays(porter.open(bshm_tf1 / "bshm_frozen.pb"))
    arrays["mrn/dec1/conv2/kernel"] = arrays["mrn/dec1/conv2/kernel"][:, :, :-1]
    with pytest.raises(MappingError, match=r"mrn/dec1/conv2/kernel .* does not fit "
                                           r"mrn\.dec1\.conv2\.conv\.weight"):
        port_bshm(arrays)


def test_missing_and_unknown_tensors_are_named(bshm_tf1: Path) -> None:
    arrays = _arrays(porter.open(bshm_tf1 / "bshm_frozen.pb"))
    del arrays["qun/dec2/conv1/batch_normalization/moving_variance"]
    arrays["mpn/extra/conv1/kernel"] = np.zeros((3, 3, 4, 4), np.float32)
    with pytest.raises(MappingError) as info:
        port_bshm(arrays)
    msg = str(info.value)
    assert "1 source tensor(s) left unmapped: mpn/extra/conv1/kernel" in msg
    assert "1 target slot(s) left unfilled: qun.dec2.conv1.bn.running_var" in msg
    assert not graphs.get_port("bshm").matches(arrays)


def test_keeping_optimizer_slots_refuses_the_port(bshm_tf1: Path) -> None:
    source = porter.open(bshm_tf1 / "bshm.ckpt")
    with pytest.raises(MappingError, match=r"left unmapped: .*/Adam"):
        port_bshm(source, keep=[r"/Adam(_1)?$"])


def test_recipe_handles_frozen_read_suffix() -> None:
    target, transform, _, matched = BSHM_FROM_TF1.target_of("mpn/enc1/conv1/kernel/read")
    assert matched and target == "mpn.enc1.conv1.conv.weight"
    assert transform is not None and transform.__name__ == "hwio_to_oihw"
