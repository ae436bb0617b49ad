"""Detection / image ops (NMS, Unique, RoiAlign, DeformConv, Col2Im, MaxUnpool, CenterCropPad,
ImageDecoder, Binarizer, ArrayFeatureExtractor): node-suite cases and onnxruntime parity."""

from __future__ import annotations

import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from onnx_conformance import run_porter  # noqa: E402

from porter.converters import convert_onnx  # noqa: E402

_OPS = re.compile(r"^test_(nonmaxsuppression|unique|center_crop_pad|col2im|basic_deform_conv|"
                  r"deform_conv|roialign|maxunpool|image_decoder|ai_onnx_ml_binarizer|"
                  r"ai_onnx_ml_array_feature_extractor)")


def _cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [c for c in collect_testcases() if _OPS.match(c.name)]


CASES = _cases()


def test_selection_covers_all_ops() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"


def _parity(node, inputs: dict[str, np.ndarray], opset: int, domain: str = "",
            atol: float = 1e-5) -> None:
    """Run a one-node model through onnxruntime and porter; every output must match."""
    import onnxruntime as ort

    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [helper.make_value_info(o, helper.TypeProto()) for o in node.output])
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    refs = ort.InferenceSession(model.SerializeToString(),
                                providers=["CPUExecutionProvider"]).run(None, inputs)
    with torch.no_grad():
        got = convert_onnx(model)(*[torch.from_numpy(v) for v in inputs.values()])
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(refs)
    for g, r in zip(got, refs):
        assert g.shape == r.shape
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-4, atol=atol)




@pytest.mark.parametrize("center", [0, 1])
def test_nms_matches_onnxruntime(center: int) -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, (2, 20, 2)).astype(np.float32)
    wh = rng.uniform(1, 5, (2, 20, 2)).astype(np.float32)
    boxes = np.concatenate([xy, wh], -1) if center else np.concatenate([xy, xy + wh], -1)
    inputs = {"boxes": boxes, "scores": rng.uniform(0, 1, (2, 3, 20)).astype(np.float32),
              "k": np.array([5], np.int64), "iou": np.array([0.3], np.float32),
              "thr": np.array([0.2], np.float32)}
    node = helper.make_node("NonMaxSuppression", list(inputs), ["y"], center_point_box=center)
    _parity(node, inputs, 11)


@pytest.mark.parametrize("axis,sorted_", [(None, 1), (None, 0), (0, 1), (1, 0)])
def test_unique_matches_onnxruntime(axis, sorted_: int) -> None:
    x = np.random.default_rng(1).integers(0, 3, (6, 4)).astype(np.float32)
    attrs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    node = helper.make_node("Unique", ["x"], ["y", "idx", "inv", "cnt"], **attrs)
    _parity(node, {"x": x}, 11)


@pytest.mark.parametrize("opset,mode,ctm", [(10, "avg", None), (16, "avg", "half_pixel"),
                                            (16, "avg", "output_half_pixel"),
                                            (16, "max", "output_half_pixel")])
def test_roi_align_matches_onnxruntime(opset: int, mode: str, ctm: str | None) -> None:
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((2, 3, 12, 10)).astype(np.float32),
              "rois": np.array([[0, 0, 9, 9], [2.5, 1, 7, 11], [-1, 3, 4, 5]], np.float32),
              "bi": np.array([0, 1, 1], np.int64)}
    attrs = {"mode": mode, "output_height": 3, "output_width": 4, "sampling_ratio": 2,
             "spatial_scale": 0.9}
    if ctm:
        attrs["coordinate_transformation_mode"] = ctm
    _parity(helper.make_node("RoiAlign", list(inputs), ["y"], **attrs), inputs, opset)


def test_deform_conv_matches_onnxruntime() -> None:
    rng = np.random.default_rng(3)
    inputs = {"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32),
              "w": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
              "off": rng.standard_normal((1, 2 * 2 * 9, 6, 6)).astype(np.float32),
              "b": rng.standard_normal(4).astype(np.float32),
              "mask": rng.uniform(0, 1, (1, 2 * 9, 6, 6)).astype(np.float32)}
    node = helper.make_node("DeformConv", list(inputs), ["y"], kernel_shape=[3, 3],
                            pads=[1, 1, 1, 1], group=2, offset_group=2)
    _parity(node, inputs, 19, atol=1e-4)


def test_col2im_matches_onnxruntime() -> None:
    x = np.random.default_rng(4).standard_normal((2, 3 * 4, 9)).astype(np.float32)
    inputs = {"x": x, "img": np.array([5, 6], np.int64), "blk": np.array([2, 2], np.int64)}
    node = helper.make_node("Col2Im", list(inputs), ["y"], strides=[2, 2], pads=[1, 0, 0, 1],
                            dilations=[1, 2])
    _parity(node, inputs, 18)


def test_max_unpool_matches_onnxruntime() -> None:
    x = torch.randn(1, 2, 6, 6)
    y, idx = torch.nn.functional.max_pool2d(x, 2, 2, return_indices=True)
    flat = idx + (torch.arange(2) * 36).reshape(1, 2, 1, 1)  # ONNX indices cover the tensor
    # without output_shape: onnxruntime reads indices in output_shape space when it is given,
    # the ONNX reference (and the node suite) in the inferred shape's space
    inputs = {"y": y.numpy(), "i": flat.numpy()}
    node = helper.make_node("MaxUnpool", list(inputs), ["z"], kernel_shape=[2, 2], strides=[2, 2])
    _parity(node, inputs, 11)


@pytest.mark.parametrize("shape,axes", [([4, 9, 3], None), ([9, 2], [0, 1]), ([7, 5], [-3, -2])])
def test_center_crop_pad_matches_onnxruntime(shape, axes) -> None:
    x = np.random.default_rng(5).standard_normal((6, 5, 3)).astype(np.float32)
    attrs = {} if axes is None else {"axes": axes}
    node = helper.make_node("CenterCropPad", ["x", "s"], ["y"], **attrs)
    _parity(node, {"x": x, "s": np.array(shape, np.int64)}, 18)


def test_binarizer_and_array_feature_extractor_match_onnxruntime() -> None:
    x = np.random.default_rng(6).standard_normal((3, 5)).astype(np.float32)
    _parity(helper.make_node("Binarizer", ["x"], ["y"], domain="ai.onnx.ml", threshold=0.2),
            {"x": x}, 17, domain="ai.onnx.ml")
    _parity(helper.make_node("ArrayFeatureExtractor", ["x", "i"], ["y"], domain="ai.onnx.ml"),
            {"x": x, "i": np.array([4, 0, 2], np.int64)}, 17, domain="ai.onnx.ml")


@pytest.mark.parametrize("fmt", ["RGB", "BGR", "Grayscale"])
def test_image_decoder_matches_pillow(fmt: str) -> None:
    """onnxruntime has no ImageDecoder kernel: compare with Pillow's own decode of a PNG."""
    import io

    import PIL.Image

    pixels = np.random.default_rng(7).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buf, format="PNG")
    data = np.frombuffer(buf.getvalue(), np.uint8)
    graph = helper.make_graph([helper.make_node("ImageDecoder", ["d"], ["y"], pixel_format=fmt)],
                              "g", [helper.make_tensor_value_info("d", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    got = convert_onnx(model)(torch.from_numpy(data.copy())).numpy()
    if fmt == "Grayscale":
        want = np.asarray(PIL.Image.fromarray(pixels).convert("L"))[..., None]
    else:
        want = pixels[..., ::-1] if fmt == "BGR" else pixels
    np.testing.assert_array_equal(got, want)
