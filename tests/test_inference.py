"""porter.inference: the CPU fast path loaded modules get. Each test compares the optimised
forward with the module's own forward (as written) on the same weights."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import porter.inference as inference
from porter.inference import build_fast_graph, fast_graph, is_optimized, plain_forward

optimize_for_inference = inference.optimize_for_inference


class IBNormLike(nn.Module):
    """BatchNorm on the first channels, InstanceNorm on the rest (as MODNet's IBNorm)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.n = c // 2
        self.bnorm = nn.BatchNorm2d(self.n)
        self.inorm = nn.InstanceNorm2d(c - self.n, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((self.bnorm(x[:, :self.n]), self.inorm(x[:, self.n:])), dim=1)


class Toy(nn.Module):
    """Every pattern the passes rewrite, in a clean-graph style."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.dw = nn.Conv2d(16, 16, 3, 1, 1, groups=16)
        self.ib = nn.Sequential(nn.Conv2d(16, 12, 3, 1, 1), IBNormLike(12), nn.ReLU())
        self.fuse = nn.Conv2d(12 + 3, 8, 3, 1, 1)  # odd channel count: convolved by parts
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.stem(img)
        x = x + self.pw(x)  # residual
        x = F.relu(self.dw(x))
        x = self.ib(x)
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.fuse(torch.cat((x, img), dim=1))
        return torch.sigmoid(self.head(x))


def _toy(seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    m = Toy()
    for mod in m.modules():  # non-trivial statistics, or folding would be an identity
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return m.eval()


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_every_rewrite_applies_and_matches_the_plain_forward() -> None:
    m = _toy()
    gm = build_fast_graph(m)
    kinds = [getattr(n.target, "__name__", str(n.target)) for n in gm.graph.nodes
             if n.op in ("call_function", "call_module")]
    assert not any("bn" in k or "bnorm" in k or "stem.1" in k for k in kinds), kinds
    for expected in ("conv2d", "write_back", "add_into", "resize_bilinear2x", "conv2d_parts",
                     "relu_", "group_norm"):
        assert expected in kinds, (expected, kinds)
    # activations right after a convolution are its fused post-ops (ReLU6 of the stem, the
    # head's sigmoid); the ReLU after a concatenation stays an in-place op
    fused = {n.args[7] for n in gm.graph.nodes
             if n.op == "call_function" and n.target is inference.conv2d and len(n.args) == 8}
    assert {"relu6", "sigmoid"} <= fused, fused
    with torch.inference_mode():
        want = plain_forward(m, X)
        got = gm(X)
    assert (got - want).abs().max().item() < 1e-5


def test_state_dict_and_weights_are_untouched() -> None:
    m = _toy()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    optimize_for_inference(m)
    assert is_optimized(m)
    with torch.inference_mode():
        want = plain_forward(m, X)
        got = m(X)
    assert (got - want).abs().max().item() < 1e-5
    after = m.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_new_weights_rebuild_the_fast_graph() -> None:
    m = optimize_for_inference(_toy(0))
    with torch.inference_mode():
        m(X)
    m.load_state_dict(_toy(1).state_dict())
    with torch.inference_mode():
        got = m(X)
        want = plain_forward(_toy(1), X)
    assert (got - want).abs().max().item() < 1e-5


def test_training_and_autograd_see_the_plain_module() -> None:
    m = optimize_for_inference(_toy())
    y = m(X)  # grad enabled: plain forward, so gradients reach every parameter
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.train()
    with torch.no_grad():
        m(X)
    assert m.stem[1].num_batches_tracked.item() == 1  # the BatchNorm itself ran, in training


def test_copies_and_pickles_keep_working() -> None:
    m = optimize_for_inference(_toy())
    with torch.inference_mode():
        want = m(X)
    for other in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert is_optimized(other) and isinstance(other, Toy)
        with torch.inference_mode():
            assert (other(X) - want).abs().max().item() < 1e-5


def test_untraceable_forward_runs_as_written() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            return y if y.sum() > 0 else -y  # data-dependent: fx cannot trace it

    m = optimize_for_inference(Branchy().eval())
    with torch.inference_mode():
        assert torch.equal(m(X), plain_forward(m, X))
    assert fast_graph(m) is None


@pytest.mark.slow
def test_modnet_fast_path_matches_its_plain_forward() -> None:
    from porter.graphs.modnet import MODNet

    torch.manual_seed(0)
    m = MODNet().eval()
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    optimize_for_inference(m)
    for shape in ((1, 3, 64, 64), (2, 3, 64, 96)):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            want = plain_forward(m, x)
            got = m(x)
        assert (got - want).abs().max().item() < 1e-5, shape


@pytest.mark.slow
@pytest.mark.parametrize("graph", ["auto", "generic"])
def test_loaded_outputs_take_the_fast_path(modnet_onnx, tmp_path, graph, caplog) -> None:
    """What load_output returns (clean graph, or generated model.py) is optimised, agrees with
    onnxruntime and with its own plain forward; fast=False leaves it plain."""
    import logging

    import numpy as np

    import porter
    from porter.verification.runtimes.onnxruntime import OrtRunner

    path, _ = modnet_onnx(11)
    out = tmp_path / "out"
    porter.convert(path, graph=graph, verify="none", out=out)
    with caplog.at_level(logging.INFO, logger="porter.perf"):
        m = porter.load(out, trust_code=True)
    assert is_optimized(m) and not is_optimized(porter.load(out, trust_code=True, fast=False))
    x = np.random.default_rng(3).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    ref = OrtRunner(path)({"input": x})["output"]
    with torch.inference_mode():
        got = m(torch.from_numpy(x))
        plain = plain_forward(m, torch.from_numpy(x))
    got = got[0] if isinstance(got, (tuple, list)) else got
    plain = plain[0] if isinstance(plain, (tuple, list)) else plain
    assert fast_graph(m) is not None
    assert float(np.abs(got.numpy() - ref).max()) < 1e-4
    # Folding and the GEMM kernel reassociate float32 sums, so the two float32 forwards differ
    # by rounding (about 2e-5 on MODNet's output); against the same network in float64 the
    # fast path must be about as accurate as the plain forward is.
    exact = plain_forward(copy.deepcopy(m).double(), torch.from_numpy(x).double())
    exact = exact[0] if isinstance(exact, (tuple, list)) else exact
    err_fast = (got.double() - exact).abs().max().item()
    err_plain = (plain.double() - exact).abs().max().item()
    assert err_fast <= 2 * err_plain + 1e-6, (err_fast, err_plain)
    assert (got - plain).abs().max().item() < 5e-5


def test_scripting_tracing_and_export_see_the_plain_forward() -> None:
    m = optimize_for_inference(_toy())
    with torch.inference_mode():
        want = m(X)
    with torch.no_grad():
        for other in (torch.jit.script(m), torch.jit.trace(m, X),
                      torch.export.export(m, (X,)).module()):
            assert (other(X) - want).abs().max().item() < 1e-5


def test_inputs_and_their_views_are_never_written() -> None:
    class OnInput(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(torch.relu(x)) + x + torch.relu(x[:, :1])

    m = optimize_for_inference(OnInput().eval())
    x = X.clone()
    with torch.inference_mode():
        got = m(x)
    assert torch.equal(x, X)
    assert torch.equal(got, plain_forward(m, X))
    kinds = [n.target for n in fast_graph(m).graph.nodes if n.op == "call_function"]
    assert torch.sigmoid_ in kinds and torch.relu in kinds  # in place only on fresh tensors


def test_npu_substitutes_take_the_fast_path() -> None:
    """``--verify npu`` checks the substituted module: its ManualInstanceNorm branches on the
    input's dtype, which fx cannot trace, so the tracer keeps substitutes whole and the
    instance norms become one group_norm each (the same function)."""
    from porter.substitutes import apply_substitutes
    from porter.substitutes.instance_norm import _ManualInstanceNorm

    class Norms(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, 1, 1)
            self.plain = nn.InstanceNorm2d(4, affine=False)
            self.affine = nn.InstanceNorm2d(4, affine=True, eps=1e-3)
            self.gelu = nn.GELU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            y = torch.cat((self.plain(y[:, :4]), self.affine(y[:, 4:])), dim=1)
            return self.gelu(y)

    torch.manual_seed(0)
    m = Norms().eval()
    m.affine.weight.data.uniform_(0.5, 1.5)
    m.affine.bias.data.uniform_(-0.5, 0.5)
    m, records = apply_substitutes(m)
    assert isinstance(m.affine, _ManualInstanceNorm) and records
    optimize_for_inference(m)
    graph = fast_graph(m)
    assert graph is not None
    kept = {type(graph.get_submodule(n.target)).__name__
            for n in graph.graph.nodes if n.op == "call_module"}
    assert not any("InstanceNorm" in k for k in kept), kept
    with torch.inference_mode():
        want = plain_forward(m, X)
        got = m(X)
    assert (got - want).abs().max().item() < 1e-5
