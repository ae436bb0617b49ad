"""Training ops: node-suite cases; the losses against onnxruntime, and the optimizer steps
(Adam, Adagrad, Momentum; onnxruntime has no kernels for them) against ``torch.optim``."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from onnx_conformance import run_porter  # noqa: E402

from porter.converters import convert_onnx  # noqa: E402

OPS = {"NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"}
OPTIMIZERS = {"Adam", "Adagrad", "Momentum"}
LOSS_PREFIXES = ("test_nllloss", "test_sce_")


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases() if c.name.startswith(LOSS_PREFIXES)
                or OPTIMIZERS & {n.op_type for n in c.model.graph.node}]


CASES = _cases()


def test_selection_covers_every_op() -> None:
    assert len(CASES) >= 110
    assert {n.op_type for c in CASES for n in c.model.graph.node} >= OPS | OPTIMIZERS


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


def _loss_model(op: str, reduction: str, weighted: bool, ignore_index: int | None,
                log_prob: bool = False):
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 4]),
              helper.make_tensor_value_info("t", TensorProto.INT64, [3, 4])]
    names = ["x", "t"]
    if weighted:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [5]))
        names.append("w")
    outs = ["y", "lp"] if log_prob else ["y"]
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], "g", inputs,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [None, 2, -1])
def test_matches_onnxruntime(op, reduction, weighted, ignore_index) -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    if op == "NegativeLogLikelihoodLoss":
        x = np.log(np.exp(x) / np.exp(x).sum(1, keepdims=True)).astype(np.float32)
    t = rng.integers(0, 5, (3, 4)).astype(np.int64)
    if ignore_index is not None:
        t[0, :2] = ignore_index
    feeds = {"x": x, "t": t}
    if weighted:
        feeds["w"] = rng.uniform(0.5, 2.0, 5).astype(np.float32)
    log_prob = op == "SoftmaxCrossEntropyLoss"
    model = _loss_model(op, reduction, weighted, ignore_index, log_prob)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    with torch.no_grad():
        out = convert_onnx(model)(*[torch.from_numpy(v) for v in feeds.values()])
    outs = list(out) if isinstance(out, tuple) else [out]
    assert len(outs) == len(ref)
    for got, exp in zip(outs, ref):
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-5, atol=1e-6)


def _optimizer_model(op: str, n: int, n_state: int, **attrs):
    names = ["r", "t"] + [f"{k}{i}" for k in "xgvh"[:n_state] for i in range(n)]
    n_out = n * (n_state - 1)
    node = helper.make_node(op, names, [f"o{i}" for i in range(n_out)],
                            domain="ai.onnx.preview.training", **attrs)
    inputs = [helper.make_tensor_value_info("r", TensorProto.FLOAT, []),
              helper.make_tensor_value_info("t", TensorProto.INT64, [])]
    inputs += [helper.make_tensor_value_info(k, TensorProto.FLOAT, [4, 3]) for k in names[2:]]
    outs = [helper.make_tensor_value_info(f"o{i}", TensorProto.FLOAT, [4, 3])
            for i in range(n_out)]
    graph = helper.make_graph([node], "g", inputs, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(
        "ai.onnx.preview.training", 1)])


def _steps(model, n_state: int, lr: float, params, grads, first_t: int = 0):
    """Run porter's optimizer step 3 times; the state slots start at zero."""
    step = convert_onnx(model)
    xs = [p.detach().clone() for p in params]
    states = [[torch.zeros_like(p) for p in params] for _ in range(n_state - 2)]
    for t in range(3):
        gs = [g(x) for g, x in zip(grads, xs)]
        args = [torch.tensor(lr), torch.tensor(t + first_t)] + xs + gs + sum(states, [])
        with torch.no_grad():
            out = step(*args)
        n = len(xs)
        xs = list(out[:n])
        states = [list(out[n * (k + 1):n * (k + 2)]) for k in range(n_state - 2)]
    return xs


def _torch_reference(opt_cls, params, grads, **kw):
    ps = [torch.nn.Parameter(p.clone()) for p in params]
    opt = opt_cls(ps, **kw)
    for _ in range(3):
        opt.zero_grad()
        for p, g in zip(ps, grads):
            p.grad = g(p.detach()).clone()
        opt.step()
    return [p.detach() for p in ps]


def _problem():
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(4, 3, generator=gen) for _ in range(2)]
    targets = [torch.randn(4, 3, generator=gen) for _ in range(2)]
    grads = [lambda x, c=c: 2 * (x - c) for c in targets]  # gradients of |x - c|^2
    return params, grads


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_torch_sgd(nesterov) -> None:
    params, grads = _problem()
    mode = "nesterov" if nesterov else "standard"
    beta = 1.0 if nesterov else 0.7
    model = _optimizer_model("Momentum", 2, 3, alpha=0.9, beta=beta, mode=mode,
                             norm_coefficient=0.01)
    got = _steps(model, 3, 0.1, params, grads)
    ref = _torch_reference(torch.optim.SGD, params, grads, lr=0.1, momentum=0.9,
                           dampening=1 - beta, nesterov=nesterov, weight_decay=0.01)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_adagrad_matches_torch_adagrad() -> None:
    params, grads = _problem()
    model = _optimizer_model("Adagrad", 2, 3, decay_factor=0.1, epsilon=1e-10,
                             norm_coefficient=0.01)
    got = _steps(model, 3, 0.1, params, grads)
    ref = _torch_reference(torch.optim.Adagrad, params, grads, lr=0.1, lr_decay=0.1,
                           eps=1e-10, weight_decay=0.01)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)


def test_adam_matches_torch_adam() -> None:
    params, grads = _problem()
    # ONNX adds epsilon before the bias correction, torch after: with epsilon 0 they agree
    model = _optimizer_model("Adam", 2, 4, alpha=0.9, beta=0.999, epsilon=0.0,
                             norm_coefficient=0.01)
    got = _steps(model, 4, 0.1, params, grads, first_t=1)
    ref = _torch_reference(torch.optim.Adam, params, grads, lr=0.1, betas=(0.9, 0.999), eps=0.0,
                           weight_decay=0.01)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
