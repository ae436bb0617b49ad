"""BackgroundMattingV2: the clean module, its recipes, and parity against a Paddle reference.

Random-weight ``.pdparams`` with the published Paddle names are written by
``scripts/bgmv2_paddle_ref.py`` in a child process (Paddle never enters the pytest process),
opened with ``porter.open``, ported, and run against the same Paddle network in dygraph.
The name tables are the published ones (``bgmv2_paddle_params.json``/``bgmv2_torch_params.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import porter
from porter.errors import MappingError
from porter.graphs import bgmv2, get_port
from porter.verification.parity import Case, run_parity
from porter.verification.runtimes.torch_ import TorchRunner

REPO = Path(__file__).resolve().parents[2]
TABLES = Path(os.environ.get("BGMV2_REFERENCE_DIR",
                             Path(__file__).resolve().parents[2].parent / "shared" / "reference"))
if not (TABLES / "bgmv2_paddle_params.json").is_file():
    pytest.skip(f"BGMv2 reference name tables not available ({TABLES} is missing; CI has it)",
                allow_module_level=True)
PADDLE_TABLE = json.loads((TABLES / "bgmv2_paddle_params.json").read_text())
TORCH_TABLE = json.loads((TABLES / "bgmv2_torch_params.json").read_text())
FACTS = json.loads((TABLES / "bgmv2_facts.json").read_text())
TOL = 1e-4

_BUILD = """
import sys, numpy as np, paddle
from scripts.bgmv2_paddle_ref import save_random
out = sys.argv[1]
save_random(out + '/base.pdparams', 'MattingBase', {'backbone': 'resnet50'}, seed=0)
names = save_random(out + '/refine.pdparams', 'MattingRefine', {'backbone': 'resnet50'}, seed=1)
# The same weights under the original PyTorch names, as a naive converter would save them.
state = paddle.load(out + '/refine.pdparams')
torch_named = {}
for k, v in state.items():
    k = k.replace('._mean', '.running_mean').replace('._variance', '.running_var')
    torch_named[k] = v
    if k.endswith('.running_var'):
        torch_named[k[:-len('running_var')] + 'num_batches_tracked'] = np.array(0, np.int64)
paddle.save(torch_named, out + '/refine_torch_names.pdparams')
"""


def _variant(key: str) -> tuple[str, dict]:
    cls, _, rest = key.partition("_")
    kwargs: dict = {"backbone": rest.split("_")[0]}
    if cls == "MattingRefine":
        kwargs["refine_kernel_size"] = 1 if rest.endswith("_k1") else 3
    return cls, kwargs


def _zeros(table: list) -> dict[str, np.ndarray]:
    return {n: np.zeros(shape, dtype=dtype) for n, shape, dtype in table}


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bgmv2")
    env = {**os.environ, "PYTHONPATH": str(REPO), "GLOG_minloglevel": "2"}
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.fixture(scope="session")
def port():
    return get_port("bgmv2")


# ----------------------------------------------------------------------------------------------
# Names, shapes and recipes against the published tables
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(TORCH_TABLE))
def test_state_dict_equals_original_pytorch_table(variant):
    cls, kwargs = _variant(variant)
    module = bgmv2.build(cls, kwargs, "meta")
    got = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
           for k, v in module.state_dict().items()]
    assert got == TORCH_TABLE[variant]


@pytest.mark.parametrize("variant", sorted(k for k in FACTS if not k.startswith("_")))
def test_parameter_counts_equal_published(variant):
    module = bgmv2.build(*_variant(variant), "meta")
    trainable = sum(p.numel() for p in module.parameters())
    assert trainable == FACTS[variant]["n_trainable_params"]
    paddle_elements = sum(int(np.prod(s)) for _, s, _ in PADDLE_TABLE[variant])
    assert paddle_elements == FACTS[variant]["n_state_elements"]


@pytest.mark.parametrize("variant", sorted(PADDLE_TABLE))
def test_paddle_recipe_accounts_for_every_name(variant):
    cls, kwargs = _variant(variant)
    assert bgmv2.infer_kwargs({n: tuple(s) for n, s, _ in PADDLE_TABLE[variant]}) == (cls, kwargs)
    module = bgmv2.build(cls, kwargs, "meta")
    state, report = bgmv2.BGMV2_FROM_PADDLE.apply(_zeros(PADDLE_TABLE[variant]), module)
    counts = report.counts()
    n_bn = sum(n.endswith("._mean") for n, _, _ in PADDLE_TABLE[variant])
    assert counts["mapped"] == len(PADDLE_TABLE[variant]) == counts["source_tensors"]
    assert counts["dropped"] == 0 and counts["filled"] == n_bn
    target = module.state_dict()
    assert list(state) == list(target) or set(state) == set(target)
    assert all(tuple(state[k].shape) == tuple(v.shape) and state[k].dtype == v.dtype
               for k, v in target.items())


@pytest.mark.parametrize("variant", sorted(TORCH_TABLE))
def test_torch_recipe_is_identity_on_original_names(variant):
    cls, kwargs = _variant(variant)
    assert bgmv2.infer_kwargs({n: tuple(s) for n, s, _ in TORCH_TABLE[variant]}) == (cls, kwargs)
    module = bgmv2.build(cls, kwargs, "meta")
    state, report = bgmv2.BGMV2_FROM_TORCH.apply(_zeros(TORCH_TABLE[variant]), module)
    assert report.counts()["mapped"] == len(TORCH_TABLE[variant]) == len(state)
    assert all(e.source == e.target for e in report.entries)


def test_paddle_recipe_rejects_torch_names_and_names_the_torch_recipe():
    module = bgmv2.build("MattingBase", {"backbone": "resnet50"}, "meta")
    with pytest.raises(MappingError, match="BGMV2_FROM_TORCH") as info:
        bgmv2.port_tensors(_zeros(TORCH_TABLE["MattingBase_resnet50"]), module)
    assert "running_mean" in str(info.value)


def test_torch_named_pdparams_rejected_then_ported_with_torch_recipe(weights, port):
    wrong = porter.open(weights / "refine_torch_names.pdparams")
    assert not port.matches(wrong)
    with pytest.raises(MappingError, match="BGMV2_FROM_TORCH"):
        port.port(wrong)
    right = port.port(porter.open(weights / "refine.pdparams"))
    via_torch = port.port(wrong, recipe="torch")
    assert via_torch.kwargs == right.kwargs
    a, b = via_torch.module.state_dict(), right.module.state_dict()
    assert list(a) == list(b)
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) == 0.0


# ----------------------------------------------------------------------------------------------
# Parity against Paddle
# ----------------------------------------------------------------------------------------------
def _parity(port, source, ported, cases):
    with port.reference(source, ported) as reference:
        candidate = TorchRunner(ported.module, ported.input_names, ported.output_names)
        report = run_parity(reference, candidate, cases, tolerance=port.tolerance,
                            reference_name=port.reference_name, candidate_name=candidate.name)
    return report


def _max_abs(report, name: str) -> float:
    return max(c["outputs"][name]["max_abs"] for c in report.cases)


def test_matting_base_parity(weights, port):
    source = porter.open(weights / "base.pdparams")
    assert source.format == "paddle-params" and port.matches(source)
    ported = port.port(source)
    assert ported.graph == "porter.graphs.bgmv2:MattingBase"
    assert ported.kwargs == {"backbone": "resnet50"}
    assert ported.mapping.counts()["mapped"] == len(PADDLE_TABLE["MattingBase_resnet50"])
    report = _parity(port, source, ported, port.cases(source, ported))
    print("\n".join(report.lines()))
    assert report.passed
    assert _max_abs(report, "pha") <= TOL and _max_abs(report, "fgr") <= TOL
    # the compared mattes are not clipped flat: the parity above says something
    pha = TorchRunner(ported.module, ported.input_names, ported.output_names)(
        port.cases(source, ported)[0].inputs)["pha"]
    assert pha.std() > 0.01 and np.mean((pha == 0) | (pha == 1)) < 0.5


def test_matting_refine_full_parity(weights, port):
    source = porter.open(weights / "refine.pdparams")
    assert port.matches(source)
    ported = port.port(source, refine_mode="full")
    assert ported.graph == "porter.graphs.bgmv2:MattingRefine"
    assert ported.kwargs == {"backbone": "resnet50", "refine_kernel_size": 3,
                             **bgmv2.REFINE_DEFAULTS, "refine_mode": "full"}
    assert bgmv2.REFINE_DEFAULTS == {k: FACTS["_refine_defaults"][k]
                                     for k in bgmv2.REFINE_DEFAULTS}
    report = _parity(port, source, ported, port.cases(source, ported))
    print("\n".join(report.lines()))
    assert report.passed
    assert _max_abs(report, "pha") <= TOL and _max_abs(report, "fgr") <= TOL


def _budget_without_ties(err: np.ndarray, around: int) -> tuple[int, float]:
    """A patch count k near ``around`` where the k-th and (k+1)-th largest errors differ most."""
    e = np.sort(err.ravel())[::-1]
    window = range(around - around // 4, around + around // 4)
    k = max(window, key=lambda i: e[i - 1] - e[i])
    return k, float(e[k - 1] - e[k])


def test_matting_refine_sampling_parity(weights, port):
    source = porter.open(weights / "refine.pdparams")
    case = Case("1x3x256x256", bgmv2.make_inputs((1, 3, 256, 256), 7), 7)
    # Choose the sample budget where the error map has a clear gap, so top-k picks the same
    # cells in torch and Paddle (tie order of topk differs between them).
    full = port.port(source, refine_mode="full")
    with torch.inference_mode():
        err_sm = full.module(*(torch.from_numpy(case.inputs[n]) for n in ("src", "bgr")))[4]
    k, gap = _budget_without_ties(err_sm.numpy(), 1024)
    assert gap > 2e-5, f"no clear top-k cut in the error map (best gap {gap:.2e})"

    ported = port.port(source, refine_mode="sampling", refine_sample_pixels=16 * k)
    assert ported.kwargs["refine_sample_pixels"] == 16 * k
    report = _parity(port, source, ported, [case])
    print("\n".join(report.lines()))
    assert report.passed
    assert _max_abs(report, "pha") <= TOL and _max_abs(report, "fgr") <= TOL
    assert _max_abs(report, "err_sm") < gap / 10
    assert _max_abs(report, "ref_sm") == 0.0  # the very same cells were refined

    out = TorchRunner(ported.module, ported.input_names, ported.output_names)(case.inputs)
    assert int(out["ref_sm"].sum()) == k
    # refined cells (8x8 crops with context) equal full-mode refinement; the others are the
    # upsampled coarse matte, which differs
    dense = TorchRunner(full.module, full.input_names, full.output_names)(case.inputs)
    cell = np.kron(out["ref_sm"][0, 0], np.ones((4, 4))) > 0
    diff = np.abs(out["pha"][0, 0] - dense["pha"][0, 0])
    assert diff[cell].max() < 1e-5
    assert diff[~cell].mean() > 1e-3

    # thresholding at the middle of that gap selects the same cells: the same outputs
    e = np.sort(err_sm.numpy().ravel())[::-1]
    thr = port.port(source, refine_mode="thresholding",
                    refine_threshold=float(e[k - 1] + e[k]) / 2)
    by_threshold = TorchRunner(thr.module, thr.input_names, thr.output_names)(case.inputs)
    assert all(np.array_equal(by_threshold[n], out[n]) for n in out)
