"""TF1 graphs with no clean module, end to end: a training MetaGraph + checkpoint (restored and
frozen by TensorFlow), a quantized frozen graph (Dequantize folded, each fold checked), a frozen
graph without Placeholders fed at an inner tensor; every source tensor traced, parity against
TensorFlow running the graph as published (fixtures from scripts/build_tf1_fixtures.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import porter
from porter.cli.main import main
from porter.errors import FormatError
from porter.importers.tf1 import dequantize, inference_io, parse_io_spec
from porter.pipeline import convert

pytestmark = pytest.mark.slow


def _entries(result) -> dict:
    return {e["source"]: e for e in result.manifest["mapping"]["entries"]}


def _run(result, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = result.module(torch.from_numpy(x))
    return (out[0] if isinstance(out, (tuple, list)) else out).numpy()


def test_metagraph_checkpoint_converts_generically(tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    src = porter.open(exp["generic"]["prefix"])
    assert inference_io(src.graph) == (["images:0"], ["head/probs:0"])  # labels/loss set aside
    result = convert(exp["generic"]["prefix"], verify="cpu", out=tmp_path / "out")
    parity = result.manifest["parity"]
    assert parity["passed"] and parity["reference"] == "tensorflow"
    assert parity["worst_max_abs"] < 1e-5
    assert result.manifest["io"] == {"inputs": ["images:0"], "outputs": ["head/probs:0"]}
    xin, probs = exp["generic"]["run"]
    assert np.abs(_run(result, xin) - probs).max() < 1e-5
    rows = _entries(result)
    assert set(rows) == set(exp["generic"]["tensors"])
    # the variables never reach tf2onnx as constants (porter binds them from the checkpoint
    # after it), so nothing is folded: the batch norm stays, every weight is found verbatim
    for name in ("stem/gamma", "stem/beta", "stem/moving_mean", "stem/moving_variance",
                 "dw/biases", "head/bias"):
        assert (rows[name]["action"], rows[name]["transform"]) == ("mapped", None), rows[name]
    assert rows["stem/weights"]["transform"] == "hwio_to_oihw"
    assert rows["dw/depthwise_weights"]["action"] == "mapped"
    assert {n for n, e in rows.items() if e["action"] == "dropped"} == {
        n for n in exp["generic"]["tensors"] if n.endswith("/Momentum") or n == "global_step"}
    assert rows["head/kernel"]["action"] == "mapped"
    assert rows["head/kernel"]["transform"] == "transpose_2d"
    assert not [e for e in rows.values() if e["action"] == "rewritten"]
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_quantized_frozen_graph_converts_with_checked_folds(tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    src = porter.open(exp["quant"]["path"])
    for name, value in exp["quant"]["quantized"].items():  # read bit-exact, like TF reads them
        ours = src.tensors[name].numpy()
        np.testing.assert_array_equal(ours, value.view(ours.dtype))
    result = convert(exp["quant"]["path"], verify="cpu", out=tmp_path / "out")
    assert result.manifest["parity"]["passed"]
    assert result.manifest["parity"]["worst_max_abs"] < 1e-5
    xin, prob = exp["quant"]["run"]
    assert np.abs(_run(result, xin) - prob).max() < 1e-5
    rows = _entries(result)
    for name in exp["quant"]["quantized"]:
        assert rows[name]["action"] == "folded", rows[name]
        assert "Dequantize" in rows[name]["note"]
    assert result.manifest["mapping"]["counts"]["rewritten"] == 0


def test_inner_tensor_fed_by_name(tf1_fixtures, tmp_path, capsys):
    _, exp = tf1_fixtures
    path = exp["inner"]["path"]
    assert porter.open(path).meta["inputs"] == []  # no Placeholder at all
    out = tmp_path / "out"
    assert main(["convert", path, "--inputs", "pre/scaled:0:1x14x14x3", "--outputs", "scores",
                 "--out", str(out), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["io"] == {"inputs": ["pre/scaled:0"], "outputs": ["scores:0"]}
    assert manifest["parity"]["passed"] and manifest["parity"]["worst_max_abs"] < 1e-5
    assert manifest["parity"]["cases"][0]["shapes"]["pre/scaled:0"] == [1, 14, 14, 3]
    assert main(["convert", path, "-q", "--inputs", "pre/scaled:0", "--outputs", "scores"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["porter: error: --inputs pre/scaled:0: an inner tensor needs a shape "
                   "(NAME:1x224x224x3)"]


def test_frozen_batchnorm_fold_is_traced(tf1_fixtures):
    from porter.generic import generic_port

    _, exp = tf1_fixtures
    _, ported = generic_port(porter.open(exp["frozen"]["path"]))
    rows = {e.source: e for e in ported.mapping.entries}
    folded = {n for n, e in rows.items() if e.action == "folded"}
    assert folded == {"c1/w", "bn/gamma", "bn/beta", "bn/moving_mean", "bn/moving_variance"}
    w = ported.module.state_dict()[rows["c1/w"].target].numpy()
    c = exp["frozen"]["consts"]
    s = c["bn/gamma"] / np.sqrt(c["bn/moving_variance"] + 0.0123)
    want = c["c1/w"].transpose(3, 2, 0, 1) * s[:, None, None, None]
    assert np.abs(w - want).max() < 1e-6
    assert rows["dw/w"].action == "mapped" and rows["fc/kernel"].transform == "transpose_2d"


def test_parse_io_spec_and_dequantize_modes():
    assert parse_io_spec("pre/scaled:0:1x14x14x3") == ("pre/scaled:0", [1, 14, 14, 3])
    assert parse_io_spec("images:?x20x20x3") == ("images:0", [-1, 20, 20, 3])
    assert parse_io_spec("logits") == ("logits:0", None)
    assert parse_io_spec("split:1") == ("split:1", None)
    with pytest.raises(FormatError):
        parse_io_spec(":0")
    q = np.array([0, 128, 255], np.uint8)
    np.testing.assert_allclose(dequantize(q, "quint8", -1.0, 1.0, "MIN_COMBINED"),
                               [-1.0, 1 / 255, 1.0], rtol=1e-6)
    np.testing.assert_allclose(dequantize(np.array([-127, 0, 127], np.int8), "qint8", -2.0, 2.0,
                                          "SCALED", narrow_range=True), [-2.0, 0.0, 2.0])


def test_checkpoint_without_metagraph_is_one_clear_line(tf1_fixtures, tmp_path, capsys):
    _, exp = tf1_fixtures
    prefix = exp["generic"]["prefix"]
    for suffix in (".index", ".data-00000-of-00001"):
        (tmp_path / f"model{suffix}").write_bytes(open(prefix + suffix, "rb").read())
    assert main(["convert", str(tmp_path / "model"), "-q", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no MetaGraph (.meta beside it)" in err[0]
    assert "mtcnn_rnet" in err[0] and not (tmp_path / "o").exists()


def test_dequantize_matches_tensorflows_own_op(tf1_fixtures):
    """porter's numpy Dequantize against TF's kernel on the fixture's weights (three modes)."""
    _, exp = tf1_fixtures
    for name, (qtype, codes, lo, hi, mode, axis, narrow, want) in exp["quant"]["dequantized"].items():
        got = dequantize(codes, qtype, lo, hi, mode, axis, narrow)
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert np.abs(got - want).max() <= 2e-7 * max(1.0, np.abs(want).max()), (name, mode)
    q, lo, hi = exp["quant"]["dequantized"]["conv/w"][1:4]
    wrong = dequantize(q, "quint8", lo, hi, "MIN_COMBINED")  # the wrong mode is caught
    assert np.abs(wrong - exp["quant"]["dequantized"]["conv/w"][-1]).max() > 1e-4


def test_identity_named_and_integer_outputs_are_outputs(tf1_fixtures, tmp_path):
    """``tf.identity(y, name="seg")`` names an output (its weights were once dropped as
    unused), so does an ArgMax head; the unnamed Identity that tf.nn.swish's custom gradient
    leaves is no output, and a weight only a string head reads is dropped with a note."""
    _, exp = tf1_fixtures
    named = exp["named"]
    src = porter.open(named["prefix"])
    assert inference_io(src.graph) == (["image:0"], ["probs:0", "label:0", "seg:0"])
    notes: list[str] = []
    result = convert(named["prefix"], verify="cpu", out=tmp_path / "out", progress=notes.append)
    assert result.manifest["io"]["outputs"] == ["probs:0", "label:0", "seg:0"]
    rows = _entries(result)
    assert {n for n, e in rows.items() if e["action"] != "mapped"} == {"captioner"}
    assert rows["captioner"]["action"] == "dropped"
    assert any("1 weights (captioner) are not reached from the outputs porter picked" in n
               for n in notes)
    xin, probs, seg, label = named["run"]
    with torch.no_grad():
        got = result.module(torch.from_numpy(xin))
    assert np.abs(got[0].numpy() - probs).max() < 1e-5
    assert np.array_equal(got[1].numpy(), label)
    assert np.abs(got[2].numpy() - seg).max() < 1e-5


def test_while_loop_checkpoint_converts_and_writes_its_loop(tf1_fixtures, tmp_path):
    """tf.while_loop (TF 1.x control flow) -> tf2onnx Loop -> porter's Loop, written to
    model.py with its body as a class of its own; parity against the restored MetaGraph at
    two batch sizes and the sequence length the cases give."""
    _, exp = tf1_fixtures
    loop = exp["while"]
    result = convert(loop["prefix"], verify="cpu", out=tmp_path / "out")
    assert result.manifest["parity"]["passed"]
    assert result.manifest["io"]["outputs"] == ["logits:0"]
    assert {e["action"] for e in _entries(result).values()} == {"mapped"}
    code = (tmp_path / "out" / "model.py").read_text()
    assert "class Loop(nn.Module)" in code and "class _Graph1(nn.Module)" in code
    loaded = porter.load(tmp_path / "out", trust_code=True)
    xin, logits = loop["run"]
    with torch.no_grad():
        got = loaded(torch.from_numpy(xin))
    assert np.abs(got.numpy() - logits).max() < 1e-5


def test_conversion_does_not_depend_on_string_hashing(tf1_fixtures, tmp_path):
    """tf2onnx walks sets: with Python's string hashing randomised per process, the while
    loop's body came out with its inputs in either order, one checkpoint giving two different
    model.py files. Two runs under different PYTHONHASHSEEDs now write the same bytes."""
    import os
    import subprocess
    import sys

    _, exp = tf1_fixtures
    outs = []
    for seed in ("1", "4"):
        out = tmp_path / f"seed{seed}"
        proc = subprocess.run([sys.executable, "-m", "porter", "convert", exp["while"]["prefix"],
                               "--verify", "none", "--out", str(out), "-q"],
                              capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(out)
    for name in ("model.py", "model.safetensors"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
