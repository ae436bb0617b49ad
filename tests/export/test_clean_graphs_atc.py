"""``--to onnx --target atc`` for porter's clean graphs BSHM (TF1), BGMv2 (Paddle) and BEN2:
parity against the torch module at several shapes, every node in the ATC table, dynamic H/W
gears only where parity proves them, and the round trip ``porter convert model.onnx --to torch``
matching the module again. Random weights with non-trivial BatchNorm statistics, small sizes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from porter.export.atc import load_atc_table
from porter.export.torch_onnx import ExportError
from porter.graphs import ben2, bgmv2, bshm
from porter.pipeline import convert, export_module
from porter.verification.parity import Case, random_cases

sys.path.insert(0, str(Path(__file__).resolve().parent))
from atc_checks import check_atc_output  # noqa: E402


@pytest.fixture(scope="module")
def atc_table():
    return load_atc_table()


def _with_bn_statistics(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Running statistics away from (0, 1), so folding BatchNorm into Conv is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return module.eval()


def _outputs(module, inputs):
    with torch.no_grad():
        out = module(*[torch.from_numpy(v) for v in inputs.values()])
    return [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def _ort(path, inputs):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, inputs)


def _dynamic_hw(model):
    return [[d.dim_param != "" for d in v.type.tensor_type.shape.dim] for v in model.graph.input]


def _check_gears(m, model, n_inputs):
    gears = m["onnx"]["dynamic"]["gears"]
    assert m["onnx"]["dynamic"]["hw"] and len(gears) >= 3 and m["onnx"]["dynamic"]["note"] is None
    assert _dynamic_hw(model) == [[False, False, True, True]] * n_inputs
    shapes = {tuple(s[2:]) for c in m["parity"]["cases"] for s in c["shapes"].values()}
    assert {tuple(g) for g in gears} <= shapes  # every declared gear proven by parity
    assert '--dynamic_image_size="' + ";".join(f"{h},{w}" for h, w in gears) + '"' \
        in m["atc"]["command"]


def _round_trip(tmp_path, out, module, shapes, inputs, bound):
    """``porter convert model.onnx --to torch`` (generic: the exported graph has BatchNorm
    folded) verifies against onnxruntime and matches the original module at a new size."""
    back = convert(out / "model.onnx", to="torch", graph="generic", out=tmp_path / "back",
                   shapes=shapes)
    assert back.manifest["parity"]["passed"]
    ours = _outputs(module, inputs)
    for a, b in zip(ours, _outputs(back.module, inputs)):
        assert a.shape == b.shape and float(np.abs(a - b).max()) <= bound * max(1.0, np.abs(a).max())
    return ours


@pytest.mark.slow
def test_bshm_exports_with_dynamic_hw_gears_and_round_trips(tmp_path, atc_table):
    torch.manual_seed(0)
    module = _with_bn_statistics(bshm.BSHM(8, 4, 8), 1)
    cases = random_cases("image", [(1, 3, 64, 64)], low=0.0, high=255.0)
    out = tmp_path / "bshm_atc"
    res = export_module(module, cases, input_names=["image"], output_names=["alpha"],
                        target="atc", out=out, name="bshm")
    m, model = check_atc_output(out, atc_table, min_cases=3)
    assert res.manifest["atc"]["command"] == m["atc"]["command"]
    assert m["onnx"]["opset"] == 11  # every op is in the table at the lowest opset tried
    _check_gears(m, model, 1)
    assert '--input_shape="image:1,3,-1,-1"' in m["atc"]["command"]
    # the file itself at a gear size, outside porter's parity code
    h, w = m["onnx"]["dynamic"]["gears"][1]
    x = {"image": np.random.default_rng(9).uniform(0, 255, (1, 3, h, w)).astype(np.float32)}
    ref = _outputs(module, x)[0]
    assert float(ref.std()) > 1e-3  # the output depends on the input
    assert float(np.abs(_ort(out / "model.onnx", x)[0] - ref).max()) <= 1e-4
    _round_trip(tmp_path, out, module, ["image=1x3x96x128"], x, 1e-4)


@pytest.mark.slow
def test_bgmv2_base_exports_with_dynamic_hw_gears_and_round_trips(tmp_path, atc_table):
    torch.manual_seed(0)
    module = _with_bn_statistics(bgmv2.MattingBase("mobilenetv2"), 2)
    cases = [Case("1x3x64x64", bgmv2.make_inputs((1, 3, 64, 64), 0), 0)]
    out = tmp_path / "bgmv2_atc"
    export_module(module, cases, input_names=["src", "bgr"], output_names=list(bgmv2.BASE_OUTPUTS),
                  target="atc", out=out, name="bgmv2")
    m, model = check_atc_output(out, atc_table, min_cases=3)
    assert [o.name for o in model.graph.output] == list(bgmv2.BASE_OUTPUTS)
    _check_gears(m, model, 2)
    assert '--input_shape="src:1,3,-1,-1;bgr:1,3,-1,-1"' in m["atc"]["command"]
    x = bgmv2.make_inputs((1, 3, 96, 160), 5)
    for a, b in zip(_outputs(module, x), _ort(out / "model.onnx", x)):
        assert float(np.abs(a - b).max()) <= 1e-4 * max(1.0, float(np.abs(a).max()))
    _round_trip(tmp_path, out, module, ["src=1x3x96x128", "bgr=1x3x96x128"], x, 1e-4)


@pytest.mark.slow
def test_bgmv2_refine_is_refused_naming_the_refiner(tmp_path):
    """MattingRefine picks patches by data (topk, nonzero): torch.onnx cannot export its Unfold
    without static sizes, and ATC could not take data-dependent shapes anyway. One error line
    naming the refiner, nothing written."""
    module = _with_bn_statistics(bgmv2.MattingRefine("mobilenetv2", refine_sample_pixels=256), 3)
    cases = [Case("1x3x128x128", bgmv2.make_inputs((1, 3, 128, 128), 0), 0)]
    out = tmp_path / "refine_atc"
    with pytest.raises(ExportError) as err:
        export_module(module, cases, input_names=["src", "bgr"],
                      output_names=list(bgmv2.REFINE_OUTPUTS), target="atc", out=out,
                      options={"dynamic": "none"})
    msg = str(err.value)
    assert "(in torch module refiner (Refiner))" in msg and "Unfold" in msg and "\n" not in msg
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_ben2_exports_static_at_its_smallest_size_and_round_trips(tmp_path, atc_table):
    """BEN2 (reduced configuration) at 384², the smallest size whose pooled grids are not empty
    (H/64 feature rows pooled by 8 must round to >= 1). Static: the adaptive-pooling grids and
    the shifted-window masks are constants of the input size, so H/W cannot be dynamic."""
    torch.manual_seed(0)
    module = ben2.BEN2(**ben2.REDUCED_CONFIG).eval()
    cases = random_cases("x", [(1, 3, 384, 384)], low=-2.0, high=2.5)
    out = tmp_path / "ben2_atc"
    export_module(module, cases, input_names=["x"], output_names=["alpha"], target="atc",
                  out=out, name="ben2", options={"dynamic": "none"})
    m, model = check_atc_output(out, atc_table, min_cases=1)
    assert m["onnx"]["dynamic"]["hw"] is False and "static export" in m["onnx"]["dynamic"]["note"]
    assert _dynamic_hw(model) == [[False] * 4]
    assert '--input_shape="x:1,3,384,384"' in m["atc"]["command"]
    assert "--dynamic_image_size" not in m["atc"]["command"]
    assert {"Einsum", "GridSample"}.isdisjoint(n.op_type for n in model.graph.node)
    peak = m["parity"]["cases"][0]["outputs"]["alpha"]["ref_peak"]
    assert 0.05 < peak <= 1.0  # a sigmoid that is not saturated at 0
    # the round trip's own parity runs the file in onnxruntime; then the module against it
    x = {"x": np.random.default_rng(4).uniform(-2.0, 2.5, (1, 3, 384, 384)).astype(np.float32)}
    alpha = _round_trip(tmp_path, out, module, ["x=1x3x384x384"], x, 1e-4)[0]
    assert float(alpha.std()) > 1e-3  # the output depends on the input
