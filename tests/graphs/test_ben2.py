"""BEN2: porter's clean module against the upstream network (../shared/reference/ben2_upstream),
names and counts, the relative-position constants, the port from .pth and .safetensors through
the pipeline (parity, NPU audit, fp16 seed criteria, output folder) and a real photo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from porter.errors import MappingError
from porter.graphs.ben2 import (
    BEN2,
    BEN2_CONFIG,
    REDUCED_CONFIG,
    build,
    infer_config,
    postprocess,
    preprocess,
    relative_position_index,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ben2_oracle as oracle  # noqa: E402

PICTURE = oracle.UPSTREAM_DIR / "pictures" / "grid_example1.png"


@pytest.fixture(scope="module")
def reduced():
    """(upstream module, seeded state) for the reduced configuration."""
    oracle.require_upstream()
    up = oracle.build_upstream(**REDUCED_CONFIG)
    state = oracle.seeded_state(up, 7)
    up.load_state_dict(state, strict=True)
    return up.eval(), state


def _inputs(shape, seed):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-2.0, 2.5, shape)
                            .astype(np.float32))


def test_full_configuration_facts():
    """Counts of the released model, on the meta device (nothing allocated)."""
    net = build(BEN2_CONFIG, "meta")
    state = net.state_dict()
    assert len(state) == 535
    assert sum(p.numel() for p in net.parameters()) == 94_134_658
    assert sum(p.numel() for p in net.backbone.parameters()) == 86_880_376
    assert sum(k.endswith("relative_position_index") for k in state) == 24
    assert infer_config({k: tuple(v.shape) for k, v in state.items()}) == \
        {**BEN2_CONFIG, "mlp_ratio": 4.0}


def test_names_and_shapes_equal_upstream():
    oracle.require_upstream()
    up = oracle.build_upstream()  # the released BEN_Base, built by upstream's own __init__
    want = {k: tuple(v.shape) for k, v in up.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in build(BEN2_CONFIG, "meta").state_dict().items()}
    assert got == want
    for name, buf in up.state_dict().items():
        if name.endswith("relative_position_index"):
            assert torch.equal(buf, relative_position_index(12)), name


@pytest.mark.parametrize("shape", [(1, 3, 384, 384),
                                   pytest.param((1, 3, 256, 512), marks=pytest.mark.slow),
                                   pytest.param((2, 3, 256, 384), marks=pytest.mark.slow)])
def test_reduced_parity_with_upstream(reduced, shape):
    up, state = reduced
    mine = BEN2(**REDUCED_CONFIG).eval()
    mine.load_state_dict(state, strict=True)
    x = _inputs(shape, sum(shape))
    with torch.inference_mode():
        ref, out = up(x), mine(x)
    assert out.shape == (shape[0], 1, *shape[2:])
    assert float(ref.std()) > 0.01  # the weights make the output depend on the input
    assert (ref - out).abs().max().item() <= 1e-4


def test_tampered_position_index_refused(reduced, tmp_path):
    from porter.importers import open_source

    _, state = reduced
    bad = dict(state)
    key = "backbone.layers.1.blocks.0.attn.relative_position_index"
    bad[key] = bad[key].flip(0).contiguous()
    torch.save({"model_state_dict": bad}, tmp_path / "bad.pth")
    src = open_source(tmp_path / "bad.pth")
    from porter.graphs import get_port

    with pytest.raises(MappingError, match="relative position index"):
        get_port("ben2").port(src)


def test_not_ben2_is_not_matched(tmp_path):
    from porter.graphs import find_ports
    from porter.importers import open_source

    torch.save({"model_state_dict": {"conv.weight": torch.ones(2, 3, 3, 3)}}, tmp_path / "x.pth")
    assert find_ports(open_source(tmp_path / "x.pth")) == []


def test_preprocess_postprocess():
    img = np.zeros((300, 200, 3), np.uint8)
    img[:, :, 0] = 255
    x = preprocess(img)
    assert x.shape == (1, 3, 1024, 1024)
    assert torch.allclose(x[0, :, 500, 500], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224,
                                                           -0.406 / 0.225]), atol=1e-5)
    alpha = torch.linspace(0, 1, 64).view(1, 1, 8, 8)
    mask = postprocess(alpha, 300, 200)
    assert mask.shape == (300, 200) and mask.dtype == np.uint8
    assert mask.min() == 0 and mask.max() == 255


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pth", "safetensors"])
def test_pipeline_port_verify_npu_and_reload(reduced, tmp_path, kind):
    """Both upstream file layouts: 100 % mapped, parity <= 1e-4 against upstream, 0 unexplained
    NPU ops, fp16 seed criteria, and an output folder that reloads into BEN2."""
    from safetensors.torch import save_model

    from porter.pipeline import convert
    from porter.zoo.load import load_output

    up, state = reduced
    if kind == "pth":
        src = tmp_path / "BEN2_Base.pth"
        torch.save({"model_state_dict": state}, src)
    else:
        src = tmp_path / "model.safetensors"
        save_model(up, str(src))  # what PyTorchModelHubMixin.save_pretrained calls
    result = convert(src, verify="npu", out=tmp_path / "out", upstream=oracle.BUILDER_SPEC)
    m = result.manifest
    counts = m["mapping"]["counts"]
    assert counts["source_tensors"] == len(state) == 311
    assert counts["mapped"] == 311 and m["graph"]["port"] == "ben2"
    assert any("relative_position_index buffers equal" in n for n in m["mapping"]["notes"])
    assert any("sideout1" in n and "unused" in n for n in m["mapping"]["notes"])
    parity = m["parity"]
    assert parity["reference"] == "torch-upstream" and parity["passed"]
    assert len(parity["cases"]) == 2 and parity["worst_max_abs"] <= 1e-4
    npu = m["npu"]
    assert npu["missing"] == [] and npu["passed"]
    ops = {o["op"] for o in npu["ops"]}
    assert {"aten::roll", "aten::softmax.int", "aten::erf", "aten::upsample_bilinear2d.vec",
            "aten::upsample_nearest2d.vec"} <= ops
    assert "aten::gelu" not in ops  # substituted by gelu_erf
    rules = {s["rule"] for s in m["substitutes"]}
    assert {"gelu_erf", "instance_norm"} <= rules
    seed = npu["fp16"]["seed_criteria"]
    alpha = seed["outputs"]["alpha"]
    assert seed["passed"] == (alpha["cosine"] > 0.99 and alpha["rel_err"] < 0.01)
    assert 0 < alpha["mae"] < 0.05
    loaded = load_output(tmp_path / "out")
    assert isinstance(loaded, BEN2)
    x = _inputs((1, 3, 256, 256), 3)
    with torch.inference_mode():
        assert (loaded(x) - up(x)).abs().max().item() <= 1e-4


@pytest.mark.slow
def test_cli_inspect_and_convert_with_photo(reduced, tmp_path, capsys):
    from porter.cli.main import main

    _, state = reduced
    src = tmp_path / "BEN2_Base.pth"
    torch.save({"model_state_dict": state, "epoch": 1}, src)
    assert main(["inspect", str(src)]) == 0
    out = capsys.readouterr().out
    assert "torch-checkpoint" in out and "311" in out
    assert "state dict at 'model_state_dict'" in out and "epoch (int)" in out
    if not PICTURE.is_file():
        pytest.skip(f"{PICTURE} missing")
    rc = main(["convert", str(src), "--to", "torch", "--graph", "ben2", "--verify", "cpu",
               "--upstream", oracle.BUILDER_SPEC, "--input", str(PICTURE),
               "--out", str(tmp_path / "o")])
    assert rc == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "image:grid_example1.png" in ln)
    assert float(line.split("max|Δ|")[1].split()[0]) <= 1e-4


def test_cli_without_upstream_is_one_line(reduced, tmp_path, capsys, monkeypatch):
    from porter.cli.main import main

    monkeypatch.delenv("PORTER_UPSTREAM", raising=False)
    _, state = reduced
    src = tmp_path / "BEN2_Base.pth"
    torch.save({"model_state_dict": state}, src)
    assert main(["convert", str(src), "--verify", "cpu"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("porter: error: ben2: parity for a PyTorch-native model")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_widened(reduced, tmp_path, dtype):
    """A checkpoint published in half precision ports onto the float32 module exactly."""
    from porter.graphs import get_port
    from porter.importers import open_source

    _, state = reduced
    half = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    torch.save({"model_state_dict": half}, tmp_path / "half.pth")
    ported = get_port("ben2").port(open_source(tmp_path / "half.pth"))
    got = ported.module.state_dict()
    for k, v in half.items():
        assert got[k].dtype == (torch.float32 if v.is_floating_point() else v.dtype), k
        assert torch.equal(got[k], v.float() if v.is_floating_point() else v), k
    assert any("widened exactly to float32" in n for n in ported.mapping.notes)
