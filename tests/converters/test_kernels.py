"""CPU inference kernels equal the torch ops they stand in for, and decline what they cannot do."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from porter.converters import convert_onnx
from porter.converters.kernels import (
    BilinearUpsample2x,
    ConcatParts,
    DeferredConcat,
    PointwiseConvGemm,
    SplitConv,
)

torch.manual_seed(0)


@pytest.mark.parametrize("cls,shape", [(nn.Conv2d, (1, 24, 9, 7)), (nn.Conv2d, (3, 24, 9, 7)),
                                       (nn.Conv1d, (2, 24, 11)), (nn.Conv3d, (1, 24, 3, 4, 5))])
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_gemm_matches_conv(cls, shape, bias):
    conv = cls(24, 40, 1, bias=bias)
    x = torch.randn(shape)
    assert PointwiseConvGemm.applies(conv)
    with torch.no_grad():
        got = PointwiseConvGemm(conv)(x)
        torch.testing.assert_close(got, conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conv", [nn.Conv2d(8, 8, 1, stride=2), nn.Conv2d(8, 8, 1, padding=1),
                                  nn.Conv2d(8, 8, 1, groups=2), nn.Conv2d(8, 8, 3)])
def test_pointwise_conv_gemm_only_takes_plain_1x1(conv):
    assert not PointwiseConvGemm.applies(conv)


def test_pointwise_conv_gemm_declines_strided_input():
    conv = nn.Conv2d(8, 4, 1)
    x = torch.randn(1, 6, 6, 8).permute(0, 3, 1, 2)  # channels-last strides
    assert PointwiseConvGemm(conv)(x) is None


@pytest.mark.parametrize("shape", [(1, 1280, 16, 16), (2, 3, 1, 9000), (1, 1, 9000, 2),
                                   (2, 8, 33, 65)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bilinear_upsample_2x_matches_interpolate(shape, dtype):
    x = torch.randn(shape, dtype=dtype)
    ref = F.interpolate(x, scale_factor=(2.0, 2.0), mode="bilinear", align_corners=False,
                        recompute_scale_factor=False)
    got = BilinearUpsample2x()(x, (2.0, 2.0))
    assert got.shape == ref.shape and got.dtype == dtype
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)


def test_bilinear_upsample_2x_leaves_small_inputs_to_aten():
    assert BilinearUpsample2x()(torch.randn(1, 2, 4, 4), (2.0, 2.0)) is None


def test_kernels_in_a_converted_model_match_onnxruntime():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((16, 8, 1, 1)).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    scales = np.array([1, 1, 2, 2], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"]),
         helper.make_node("Resize", ["c", "", "scales"], ["y"], mode="linear",
                          coordinate_transformation_mode="half_pixel")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 48, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(scales, "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    x = rng.standard_normal((1, 8, 48, 40)).astype(np.float32)
    module = convert_onnx(model)
    assert [type(st.kernel) for st in module._steps] == [PointwiseConvGemm, BilinearUpsample2x]
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    with torch.inference_mode():
        got = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels,stride", [((32, 3), 1), ((3, 32), 2), ((64, 32, 3), 1)])
def test_split_conv_over_concat_parts_matches_conv_of_cat(channels, stride):
    conv = nn.Conv2d(sum(channels), 16, 3, stride=stride, padding=1)
    parts = [torch.randn(2, c, 20, 17) for c in channels]
    deferred = DeferredConcat()(1, *parts)
    assert isinstance(deferred, ConcatParts)
    with torch.no_grad():
        got = SplitConv(conv, None)(deferred)
        torch.testing.assert_close(got, conv(torch.cat(parts, 1)), rtol=1e-5, atol=1e-5)


def test_deferred_concat_keeps_aligned_or_non_channel_concats():
    a, b = torch.randn(1, 8, 4, 4), torch.randn(1, 16, 4, 4)
    assert DeferredConcat()(1, a, b) is None          # aligned: a plain cat is as cheap
    assert DeferredConcat()(2, a[:, :3], a[:, :3]) is None  # not the channel axis


def _concat_conv_model(extra_outputs: tuple[str, ...] = (), extra_nodes=()):
    rng = np.random.default_rng(9)
    w = rng.standard_normal((8, 11, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["a"], ["ra"]), helper.make_node("Neg", ["b"], ["nb"]),
         helper.make_node("Concat", ["ra", "nb"], ["cat"], axis=1),
         helper.make_node("Conv", ["cat", "w"], ["y"], pads=[1, 1, 1, 1]), *extra_nodes],
        "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 8, 12, 10]),
              helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 3, 12, 10])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
         for o in ("y", *extra_outputs)],
        [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("extra_outputs,extra_nodes,deferred", [
    ((), (), True),
    (("cat",), (), False),  # the concatenation is a graph output: it must exist
    (("s",), (helper.make_node("Sigmoid", ["cat"], ["s"]),), False),  # a second reader
])
def test_concat_into_conv_in_a_converted_model(extra_outputs, extra_nodes, deferred):
    model = _concat_conv_model(extra_outputs, extra_nodes)
    rng = np.random.default_rng(2)
    feeds = {"a": rng.standard_normal((1, 8, 12, 10)).astype(np.float32),
             "b": rng.standard_normal((1, 3, 12, 10)).astype(np.float32)}
    module = convert_onnx(model)
    kinds = {st.op_type: type(st.kernel) for st in module._steps}
    assert (kinds["Concat"] is DeferredConcat) == deferred
    ref = ort.InferenceSession(model.SerializeToString()).run(None, feeds)
    with torch.inference_mode():
        got = module(*(torch.from_numpy(v) for v in feeds.values()))
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("activation", [None, "relu", "relu6", "sigmoid"])
@pytest.mark.parametrize("cin,cout,k,stride,dilation,groups", [
    (16, 24, 1, 1, 1, 1), (8, 16, 3, 1, 1, 1), (12, 12, 3, 2, 1, 12), (6, 10, 5, 1, 2, 1)])
def test_onednn_conv_fuses_the_activation_exactly(activation, cin, cout, k, stride, dilation,
                                                  groups):
    import torch.nn.functional as F

    from porter.converters import kernels

    g = torch.Generator().manual_seed(k * 10 + cin)
    x = (torch.randn(2, cin, 23, 19, generator=g) * 3).contiguous(
        memory_format=torch.channels_last)
    w = torch.randn(cout, cin // groups, k, k, generator=g)
    b = torch.randn(cout, generator=g)
    pad = dilation * (k // 2)
    want = F.conv2d(x.contiguous(), w, b, stride, pad, dilation, groups)
    if activation:
        want = kernels.ACTIVATIONS[activation][2](want)
    got = kernels.onednn_conv(x, w, b, (stride, stride), (pad, pad), (dilation, dilation),
                              groups, activation)
    assert got is not None and got.is_contiguous(memory_format=torch.channels_last)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    # row-major input and string padding are declined (the caller runs its own path)
    assert kernels.onednn_conv(x.contiguous(), w, b, (stride,) * 2, (pad, pad),
                               (dilation,) * 2, groups, activation) is None
    assert kernels.onednn_conv(x, w, b, (1, 1), "same", (1, 1), groups, activation) is None


def test_conv2d_without_onednn_applies_the_activation_itself(monkeypatch):
    import torch.nn.functional as F

    from porter import inference
    from porter.converters import kernels

    x = torch.randn(1, 8, 16, 16).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(4, 8, 3, 3), torch.randn(4)
    want = F.hardtanh(F.conv2d(x, w, b, 1, 1), 0.0, 6.0)
    monkeypatch.setattr(kernels, "_ONEDNN_CONV", [None])  # a torch build without the op
    got = inference.conv2d(x, w, b, (1, 1), (1, 1), (1, 1), 1, "relu6")
    assert (got - want).abs().max().item() < 1e-5
