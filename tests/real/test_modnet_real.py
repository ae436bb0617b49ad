"""Acceptance on the real MODNet export: the flagship command, and its output reloaded by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

MODNET = "modnet_photographic_portrait_matting.onnx"


@pytest.fixture(scope="module")
def flagship(tmp_path_factory, real_model):
    """`porter convert REAL --to torch --verify npu --out X --json`, run once."""
    import contextlib
    import io

    from porter.cli.main import main

    src = real_model(MODNET)
    out = tmp_path_factory.mktemp("flagship") / "X"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["convert", str(src), "--to", "torch", "--verify", "npu", "--out", str(out),
                     "--json"])
    assert code == 0
    return src, out, json.loads(stdout.getvalue())


def test_manifest_accounts_for_every_tensor_and_passes_checks(flagship):
    src, out, manifest = flagship
    assert manifest == json.loads((out / "manifest.json").read_text()) | {
        "timings_s": manifest["timings_s"]}
    assert manifest["source"]["sha256"] == \
        "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9"
    assert manifest["graph"] == {"class": "porter.graphs.modnet:MODNet",
                                 "kwargs": {"in_channels": 3, "hr_channels": 32},
                                 "port": "modnet"}
    inits = manifest["mapping"]["by_kind"]["initializer"]
    assert inits["total"] == 215 and inits["mapped"] + inits["structure"] == 215
    parity = manifest["parity"]
    assert parity["passed"] and parity["reference"] == "onnxruntime"
    assert {c["name"] for c in parity["cases"]} == {"1x3x512x512", "2x3x512x672", "1x3x256x256"}
    assert all(o["max_abs"] <= 1e-4 for c in parity["cases"] for o in c["outputs"].values())
    npu = manifest["npu"]
    assert npu["device"] == "audit" and npu["missing"] == [] and npu["passed"]
    assert npu["fp16"]["cases"][0]["outputs"]["output"]["max_abs"] < 0.1
    assert {s["rule"] for s in manifest["substitutes"]} >= {"instance_norm"}


def test_output_reloads_by_hand_and_matches_onnxruntime_on_unseen_inputs(flagship):
    from safetensors.torch import load_file

    from porter.graphs import import_graph
    from porter.verification.runtimes.onnxruntime import OrtRunner

    src, out, manifest = flagship
    cls = import_graph(manifest["graph"]["class"])
    module = cls(**manifest["graph"]["kwargs"]).eval()
    module.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    ort = OrtRunner(src)
    for shape, seed in (((1, 3, 320, 480), 4242), ((1, 3, 384, 384), 777)):
        x = np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)
        with torch.no_grad():
            got = module(torch.from_numpy(x)).numpy()
        assert np.abs(got - ort({"input": x})["output"]).max() <= 1e-4


def test_from_zoo_after_publish(flagship, tmp_path):
    from porter.graphs.modnet import MODNet
    from porter.zoo.publish import publish, verify_entry

    _, out, _ = flagship
    publish(out, "modnet_photographic", tmp_path)
    assert verify_entry("modnet_photographic", tmp_path)["ok"]
    model = MODNet.from_zoo("modnet_photographic", tmp_path)
    with torch.no_grad():
        alpha = model(torch.zeros(1, 3, 64, 64))
    assert alpha.shape == (1, 1, 64, 64)
