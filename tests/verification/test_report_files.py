"""Issue 11, "Why" 10: a conversion with --input saves both runtimes' outputs and a difference
heat map as PNGs, with a Markdown and HTML parity table, in OUT/report/ and in --report DIR."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from porter.cli.main import main
from porter.verification.runtimes.onnxruntime import OrtRunner

PICTURES = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / \
    "ben2_upstream" / "pictures"


@pytest.fixture()
def sigmoid_conv(tmp_path):
    w = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(1, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["z"], pads=[1, 1, 1, 1]),
         helper.make_node("Sigmoid", ["z"], ["alpha"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 64])],
        [helper.make_tensor_value_info("alpha", TensorProto.FLOAT, [1, 1, 48, 64])], [w])
    path = tmp_path / "matte.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                                ir_version=8), path)
    return path


@pytest.fixture()
def photo(tmp_path):
    """A real photo where ../shared has one, else a picture drawn here (the PNG logic is what
    is tested; the real-photo run is in tests/real/test_readme_tour.py)."""
    src = PICTURES / "grid_example1.png"
    if src.is_file():
        with Image.open(src) as im:
            img = im.convert("RGB").crop((0, 0, 640, 480))
    else:
        yy, xx = np.mgrid[0:480, 0:640]
        img = Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8))
    path = tmp_path / "photo one.png"
    img.save(path)
    return path


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def test_input_picture_gives_pngs_of_both_runtimes_and_a_heat_map(tmp_path, sigmoid_conv,
                                                                  photo):
    out, rep = tmp_path / "out", tmp_path / "rep"
    assert main(["convert", str(sigmoid_conv), "--input", str(photo), "--out", str(out),
                 "--report", str(rep), "-q"]) == 0
    for folder in (out / "report", rep):
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["photo_one.png_diff.png", "photo_one.png_porter.png",
                         "photo_one.png_reference.png", "report.html", "report.md"], names
    md = (rep / "report.md").read_text()
    assert "| image:photo one.png | alpha |" in md and "![](photo_one.png_diff.png)" in md
    html = (rep / "report.html").read_text()
    assert "<table>" in html and 'src="photo_one.png_porter.png"' in html
    # the reference PNG is onnxruntime's alpha for the picture, mapped from [lo, hi] to 0..255
    from porter.generic import image_input

    with Image.open(photo) as im:
        rgb = np.asarray(im.convert("RGB"))
    x = image_input(rgb, np.zeros((1, 3, 48, 64), np.float32))
    alpha = OrtRunner(sigmoid_conv)({"x": x})["alpha"][0, 0].astype(np.float64)
    ref_png, ours = _png(rep / "photo_one.png_reference.png"), _png(rep / "photo_one.png_porter.png")
    assert ref_png.shape == (48, 64) and ref_png.dtype == np.uint8
    lo, hi = alpha.min(), alpha.max()
    want = np.clip(np.round((alpha - lo) / (hi - lo) * 255), 0, 255)
    assert np.abs(ref_png.astype(int) - want).max() <= 1  # lo/hi also include porter's output
    assert np.abs(ref_png.astype(int) - ours.astype(int)).max() <= 1
    heat = _png(rep / "photo_one.png_diff.png")
    assert heat.shape == (48, 64, 3)
    manifest = json.loads((out / "manifest.json").read_text())
    case = [c for c in manifest["parity"]["cases"] if c["name"] == "image:photo one.png"][0]
    assert case["outputs"]["alpha"]["passed"]


def test_heat_map_scale():
    from porter.verification.report import heat_png

    d = np.zeros((1, 1, 2, 3))
    d[0, 0, 1, 2] = 5.0
    px = np.asarray(Image.open(io.BytesIO(heat_png(d))))
    assert px[1, 2].tolist() == [255, 255, 255] and px[0, 0].tolist() == [0, 0, 0]
