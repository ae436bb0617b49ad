"""porter.channels_last: the fast path's graph runs channels-last where it pays, computes the
same values as the module as written, and hands row-major tensors to everything it does not
know and to the caller."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from porter import channels_last
from porter.converters import kernels
from porter.inference import build_fast_graph, plain_forward

CL = torch.channels_last


def _targets(gm) -> list:
    return [n.target for n in gm.graph.nodes if n.op == "call_function"]


@pytest.mark.parametrize("mean", [0.0, 10.0, 100.0])
@pytest.mark.parametrize("affine", [False, True])
def test_instance_norm_is_as_exact_as_the_row_major_kernel(mean: float, affine: bool) -> None:
    """torch's own channels-last group_norm loses the variance to float32 cancellation when the
    mean is large; porter's stays as close to float64 as the row-major kernel."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 24, 40, 56, generator=g) * 2 + mean
    w = torch.rand(24, generator=g) + 0.5 if affine else None
    b = torch.randn(24, generator=g) if affine else None
    exact = F.group_norm(x.double(), 24, None if w is None else w.double(),
                         None if b is None else b.double(), 1e-5)
    rowmajor = (F.group_norm(x, 24, w, b, 1e-5).double() - exact).abs().max().item()
    xcl = x.contiguous(memory_format=CL)
    ours = channels_last.group_norm(xcl, 24, w, b, 1e-5)
    assert ours.is_contiguous(memory_format=CL)
    err = (ours.double() - exact).abs().max().item()
    assert err <= 2 * rowmajor + 1e-6, (err, rowmajor)
    # on a channel slice of a channels-last tensor (IBNorm normalises half a conv's output)
    wide = torch.cat((x, x), 1).contiguous(memory_format=CL)[:, 24:]
    assert (channels_last.group_norm(wide, 24, w, b, 1e-5).double() - exact).abs().max() <= (
        2 * rowmajor + 1e-6)
    if mean >= 10.0:  # what the rewrite avoids
        torch_cl = (F.group_norm(xcl, 24, w, b, 1e-5).double() - exact).abs().max().item()
        assert torch_cl > 10 * err


def test_group_norm_with_fewer_groups_than_channels_runs_row_major() -> None:
    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=CL)
    got = channels_last.group_norm(x, 2, None, None, 1e-5)
    assert torch.equal(got, F.group_norm(x.contiguous(), 2, None, None, 1e-5))


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_channels_last_matches_conv(bias: bool) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(12, 20, 1, 1, generator=g)
    b = torch.randn(12, generator=g) if bias else None
    x = torch.randn(2, 40, 9, 11, generator=g).contiguous(memory_format=CL)
    for inp in (x[:, :20], x[:, 20:]):  # channel slices: read in place
        got = kernels.pointwise_conv_channels_last(inp, w, b)
        assert got.is_contiguous(memory_format=CL)
        assert (got - F.conv2d(inp.contiguous(), w, b)).abs().max().item() < 1e-5
    assert kernels.pointwise_conv_channels_last(x.contiguous()[:, :20], w, b) is None


class Mixed(nn.Module):
    """Convolutions between ops the pass knows and ops it does not (a view, a flatten)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.norm = nn.InstanceNorm2d(8)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor, aux: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y = F.relu(self.c1(x))
        y = self.c2(y) + y
        y = torch.cat((self.norm(y[:, :8]), y[:, 8:]), 1)
        z = self.dw(y)
        n, c, h, w = z.shape
        flat = z.view(n, c, h * w)  # needs row-major strides
        pooled = F.adaptive_avg_pool2d(z, 1).flatten(1)
        return flat, self.fc(pooled), aux.view(aux.shape[0], -1) * 2


def test_unknown_ops_and_outputs_see_row_major_tensors() -> None:
    torch.manual_seed(0)
    m = Mixed().eval()
    gm = build_fast_graph(m)
    targets = _targets(gm)
    assert targets.count(channels_last.to_channels_last) == 1  # x only: aux feeds no conv
    assert channels_last.dense in targets
    x = torch.randn(2, 3, 12, 10)
    aux = torch.randn(2, 3, 4, 4)
    with torch.inference_mode():
        got = gm(x, aux)
        want = plain_forward(m, x, aux)
    for g_, w_ in zip(got, want):
        assert g_.is_contiguous()
        assert (g_ - w_).abs().max().item() < 1e-5


def test_graphs_without_spatial_convolutions_stay_row_major() -> None:
    m = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 2, 1)).eval()
    gm = build_fast_graph(m)
    assert channels_last.to_channels_last not in _targets(gm)
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        assert (gm(x) - plain_forward(m, x)).abs().max().item() < 1e-5


def test_only_weights_the_graph_copied_become_channels_last() -> None:
    """A folded convolution's weight (the graph's own copy) turns channels-last; a plain
    convolution keeps reading the module's parameter (no second copy of a model's weights)."""
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                      nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)).eval()
    m[1].running_mean.uniform_(-0.5, 0.5)
    gm = build_fast_graph(m)
    assert channels_last.to_channels_last in _targets(gm)
    folded = [b for name, b in gm.named_buffers() if name.startswith("_porter_folded_")
              and b.dim() == 4]
    assert len(folded) == 1 and folded[0].is_contiguous(memory_format=CL)
    assert not any(name.startswith("_porter_cl") for name, _ in gm.named_buffers())
    reads = {n.args[1].target for n in gm.graph.nodes
             if n.op == "call_function" and getattr(n.target, "__name__", "") == "conv2d"}
    assert "3.weight" in reads and m[3].weight.is_contiguous()
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        y = gm(x)
    assert y.is_contiguous()
    assert (y - plain_forward(m, x)).abs().max().item() < 1e-5


def test_upsampling_writes_into_its_kept_output_again() -> None:
    """x2 bilinear upsampling of a channels-last tensor writes into its previous output once
    the graph let go of it, with the same values as F.interpolate (and as a fresh output)."""
    class Up(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, padding=1)
            self.head = nn.Conv2d(16, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.interpolate(self.conv(x), scale_factor=2.0, mode="bilinear",
                              align_corners=False)
            return self.head(y)

    torch.manual_seed(0)
    m = Up().eval()
    gm = build_fast_graph(m)
    x = torch.randn(1, 3, 384, 384)  # a 36 MiB upsampled tensor: kept between calls
    with torch.inference_mode():
        want = plain_forward(m, x)
        first = gm(x)
        (kept,) = gm._porter_buffers.slots.values()
        ptr = kept[0].data_ptr()
        del kept
        second = gm(x)
        (kept,) = gm._porter_buffers.slots.values()
    assert kept[0].data_ptr() == ptr
    assert torch.equal(first, second)
    assert (second - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("shape", [(1, 16, 33, 20), (2, 8, 64, 64)])
def test_channels_last_upsampling_equals_interpolate(shape) -> None:
    from porter.converters.reuse import OutputBuffers
    from porter.inference import resize_bilinear2x

    x = torch.randn(shape).contiguous(memory_format=CL)
    want = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    for bufs in (None, OutputBuffers()):
        got = resize_bilinear2x(x, bufs, 0)
        assert got.is_contiguous(memory_format=CL)
        assert torch.equal(got, want)


def test_convolutions_past_an_unknown_op_keep_row_major_weights() -> None:
    """A convolution whose input arrives through an op the pass does not know (row-major
    there) keeps a row-major folded weight: a channels-last one would make its result
    channels-last too, and the next unknown op would copy it back."""
    class AfterView(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8))
            self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.a(x)
            n, c, h, w = y.shape
            y = y.view(n, c, h * w).view(n, c, h, w)  # unknown to the pass: row-major after
            return self.b(y)

    m = AfterView().eval()
    for bn in (m.a[1], m.b[1]):
        bn.running_mean.uniform_(-0.5, 0.5)
    gm = build_fast_graph(m)
    convs = [n for n in gm.graph.nodes if n.op == "call_function"
             and getattr(n.target, "__name__", "") == "conv2d"]
    layouts = [getattr(gm, n.args[1].target).is_contiguous() for n in convs]
    assert layouts == [False, True]  # the first channels-last, the second row-major
    x = torch.randn(2, 3, 12, 12)
    with torch.inference_mode():
        assert (gm(x) - plain_forward(m, x)).abs().max().item() < 1e-5
