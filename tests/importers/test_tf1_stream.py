"""TF1 checkpoints stream (issue 14, item 4): the graph TensorFlow prepares and tf2onnx converts
holds no weight (each variable is a Placeholder), porter binds the checkpoint's own tensors
afterwards (views of its private map, or one transformed copy), parity against TensorFlow
running the restored MetaGraph, and a conversion holds about one copy of the weights (as do
the TensorFlow and tf2onnx children: none). Models are built by TensorFlow itself in a child
process (TensorFlow never enters the pytest process)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import porter
from porter.pipeline import convert

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conversion_rss import conversion_rss  # noqa: E402

# OUT DENSE CONV [--ref] [--gather] [--partitioned]: a training MetaGraph + checkpoint (three
# Momentum steps, a label placeholder and a loss) of conv (HWIO, bias) -> fused batch norm ->
# relu6 -> depthwise -> conv (CONV channels) -> conv (CONV) -> mean -> CONV x DENSE and two
# DENSE x DENSE matmuls -> softmax; --ref makes TF1 ref variables (VariableV2) instead of
# resource ones; --partitioned splits the first dense kernel in 3 parts; --fakequant reads it
# through a per-channel fake quantization whose ranges are variables. Writes expected.pkl:
# TF's outputs on a fixed input, and every checkpoint tensor as tf.train.load_checkpoint reads.
_BUILD = r"""
import os, pickle, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, tensorflow as tf
out, dense, conv = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
flags = set(sys.argv[4:])
v1 = tf.compat.v1
v1.disable_eager_execution()
if "--ref" in flags:
    v1.disable_resource_variables()
rng = np.random.default_rng(11)
g = tf.Graph()
with g.as_default():
    step = v1.train.get_or_create_global_step()
    x = v1.placeholder(tf.float32, [None, 12, 12, 3], name="images")
    labels = v1.placeholder(tf.int32, [None], name="labels")
    init = lambda s: v1.random_normal_initializer(stddev=s, seed=int(rng.integers(1 << 30)))
    with v1.variable_scope("stem"):
        w = v1.get_variable("weights", [3, 3, 3, 16], initializer=init(0.3))
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"),
                           v1.get_variable("biases", [16], initializer=init(0.1)))
        y, _, _ = v1.nn.fused_batch_norm(
            y, v1.get_variable("gamma", [16], initializer=v1.random_uniform_initializer(0.5, 1.5)),
            v1.get_variable("beta", [16], initializer=init(0.1)),
            mean=v1.get_variable("moving_mean", [16], initializer=init(0.1), trainable=False),
            variance=v1.get_variable("moving_variance", [16], trainable=False,
                                     initializer=v1.random_uniform_initializer(0.5, 2.0)),
            epsilon=0.001, is_training=False)
        y = tf.nn.relu6(y)
    with v1.variable_scope("dw"):
        y = tf.nn.depthwise_conv2d(y, v1.get_variable("w", [3, 3, 16, 2], initializer=init(0.3)),
                                   [1, 1, 1, 1], "SAME")
    with v1.variable_scope("conv"):
        y = tf.nn.relu(tf.nn.conv2d(y, v1.get_variable("w", [3, 3, 32, conv],
                                                          initializer=init(0.05)),
                                    [1, 2, 2, 1], "SAME"))
    with v1.variable_scope("conv2"):
        y = tf.nn.relu(tf.nn.conv2d(y, v1.get_variable("w", [3, 3, conv, conv],
                                                          initializer=init(0.05)),
                                    [1, 1, 1, 1], "SAME"))
    feat = tf.reduce_mean(y, [1, 2])
    with v1.variable_scope("proj"):
        part = v1.fixed_size_partitioner(3) if "--partitioned" in flags else None
        kernel = v1.get_variable("kernel", [conv, dense], initializer=init(0.1),
                                 partitioner=part)
        if "--fakequant" in flags:  # quantization-aware training: ranges are variables too
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, v1.get_variable("min", [dense], initializer=v1.constant_initializer(-.2)),
                v1.get_variable("max", [dense], initializer=v1.constant_initializer(0.2)))
        h = tf.matmul(feat, kernel)
    for i in range(2):
        with v1.variable_scope(f"fc{i}"):
            h = tf.nn.relu(tf.nn.bias_add(
                tf.matmul(h, v1.get_variable("kernel", [dense, dense],
                                             initializer=init(1 / np.sqrt(dense)))),
                v1.get_variable("bias", [dense], initializer=init(0.1))))
    with v1.variable_scope("head"):
        logits = tf.matmul(h, v1.get_variable("kernel", [dense, 5], initializer=init(0.1)))
        tf.nn.softmax(logits, name="probs")
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                                         logits=logits))
    train = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
    saver = v1.train.Saver()
    with v1.Session(graph=g) as sess:
        sess.run(v1.global_variables_initializer())
        for _ in range(3):
            sess.run(train, {x: rng.uniform(-1, 1, (2, 12, 12, 3)), labels: [1, 3]})
        prefix = saver.save(sess, os.path.join(out, "model.ckpt"), global_step=step)
        xin = rng.uniform(-1, 1, (2, 12, 12, 3)).astype(np.float32)
        probs = sess.run("head/probs:0", {x: xin})
reader = tf.train.load_checkpoint(prefix)
tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
with open(os.path.join(out, "expected.pkl"), "wb") as fh:
    pickle.dump({"prefix": prefix, "run": (xin, probs), "tensors": tensors}, fh)
"""


def _build(folder: Path, dense: int, conv: int, *flags: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(folder), str(dense), str(conv),
                           *flags], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(folder / "expected.pkl", "rb") as fh:
        return pickle.load(fh)


def _weight_bytes(exp: dict) -> int:
    return sum(v.nbytes for n, v in exp["tensors"].items()
               if not n.endswith("/Momentum") and n != "global_step")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    return _build(tmp_path_factory.mktemp("tf1_stream"), 64, 24)


def _rows(result) -> dict:
    return {e["source"]: e for e in result.manifest["mapping"]["entries"]}


def test_prepared_graph_holds_no_weight(small, tmp_path) -> None:
    """What TensorFlow writes for tf2onnx is the graph alone: every variable the outputs read
    is a Placeholder (bound to its checkpoint key), and tf2onnx's model holds none of them."""
    from porter.importers.tf1 import prepare_graph, to_onnx

    src = porter.open(small["prefix"])
    prepared = prepare_graph(src, tmp_path / "prepared.pb")
    assert prepared.variables == {f"{k}:0": k for k in (
        "stem/weights", "stem/biases", "stem/gamma", "stem/beta", "stem/moving_mean",
        "stem/moving_variance", "dw/w", "conv/w", "conv2/w", "proj/kernel", "fc0/kernel",
        "fc0/bias",
        "fc1/kernel", "fc1/bias", "head/kernel")}
    assert [i["name"] for i in prepared.inputs] == ["images:0"]
    assert prepared.frozen_from is None and not prepared.notes
    assert prepared.path.stat().st_size < 16384  # the graph's ops only (weights: 119 KiB)
    given = prepared.tf2onnx_inputs(src)  # each variable shaped from the checkpoint
    assert given[0] == "images:0" and len(given) == 1 + len(prepared.variables)
    assert {"conv/w:0[3,3,32,24]", "fc0/kernel:0[64,64]", "fc0/bias:0[64]"} <= set(given)
    model = to_onnx(prepared.path, prepared.tf2onnx_inputs(src), prepared.outputs)
    inputs = {v.name for v in model.graph.input}
    assert set(prepared.variables) <= inputs
    assert max((int(np.prod(t.dims)) for t in model.graph.initializer), default=0) < 64


def test_streamed_checkpoint_converts_with_parity(small, tmp_path) -> None:
    result = convert(small["prefix"], verify="cpu", out=tmp_path / "out")
    parity = result.manifest["parity"]
    assert parity["passed"] and parity["reference"] == "tensorflow"
    assert parity["worst_max_abs"] <= 1e-4
    xin, probs = small["run"]  # TensorFlow's own outputs, from the builder
    with torch.no_grad():
        got = result.module(torch.from_numpy(xin))
    got = (got[0] if isinstance(got, (tuple, list)) else got).numpy()
    assert np.abs(got - probs).max() < 1e-5
    rows, tensors = _rows(result), small["tensors"]
    assert set(rows) == set(tensors)
    dropped = {n for n, e in rows.items() if e["action"] == "dropped"}
    assert dropped == {n for n in tensors if n.endswith("/Momentum") or n == "global_step"}
    assert all(e["action"] == "mapped" for n, e in rows.items() if n not in dropped), rows
    state = result.module.state_dict()
    for name, transform, want in (
            ("stem/weights", "hwio_to_oihw", tensors["stem/weights"].transpose(3, 2, 0, 1)),
            ("conv2/w", "hwio_to_oihw", tensors["conv2/w"].transpose(3, 2, 0, 1)),
            ("fc0/kernel", "transpose_2d", tensors["fc0/kernel"].T),
            ("fc1/bias", None, tensors["fc1/bias"])):
        assert rows[name]["transform"] == transform
        np.testing.assert_array_equal(state[rows[name]["target"]].numpy(), want)
    notes = " ".join(result.manifest["mapping"]["notes"])
    assert "15 checkpoint variables kept out of the graph" in notes


def test_ref_variables_and_partitioned_kernel(tmp_path) -> None:
    """TF1 ref variables (VariableV2 + /read) stream too; a partitioned kernel's parts are
    given to TensorFlow as Consts of the values porter read, folded whole by tf2onnx."""
    exp = _build(tmp_path / "m", 32, 8, "--ref", "--partitioned")
    src = porter.open(exp["prefix"])
    assert {d["op_type"] for _, d in src.graph.nodes(data=True)} >= {"VariableV2"}
    result = convert(exp["prefix"], verify="cpu", out=tmp_path / "out")
    assert result.manifest["parity"]["passed"]
    assert result.manifest["parity"]["worst_max_abs"] <= 1e-4
    rows = _rows(result)
    assert rows["proj/kernel"]["action"] == "mapped", rows["proj/kernel"]
    assert rows["proj/kernel"]["transform"] == "transpose_2d"
    assert rows["fc0/kernel"]["action"] == "mapped"
    assert "14 checkpoint variables kept out" in " ".join(result.manifest["mapping"]["notes"])


def test_graph_that_needs_a_weight_as_a_constant_is_frozen_instead(tmp_path) -> None:
    """A per-channel fake quantization of a kernel converts only as a constant (tf2onnx folds
    it with TensorFlow): without the kernel's value it is left an op no converter takes, so
    TensorFlow restores and freezes that graph instead (as before streaming), and says so."""
    exp = _build(tmp_path / "m", 16, 8, "--fakequant")
    result = convert(exp["prefix"], verify="cpu", out=tmp_path / "out")
    assert result.manifest["parity"]["passed"]
    assert result.manifest["parity"]["worst_max_abs"] <= 1e-4
    notes = " ".join(result.manifest["mapping"]["notes"])
    assert "not streamed" in notes and "FakeQuantWithMinMaxVarsPerChannel" in notes
    assert "restored and frozen" in notes
    assert result.manifest["mapping"]["counts"]["accounted"] == len(exp["tensors"])




def test_conversion_holds_about_one_copy_of_the_weights(tmp_path) -> None:
    """~47 MiB of weights (dense 2350² kernels, 3x3x256x256 and smaller convs, batch norm): RSS
    growth of the conversion, after a warm-up conversion, is at most 1.5x the weights; the
    TensorFlow and tf2onnx children grow by less than half the weights over the tiny model's
    (they never hold one)."""
    from safetensors import safe_open

    big = _build(tmp_path / "big", 2350, 256)
    tiny = _build(tmp_path / "tiny", 8, 4)
    nbytes = _weight_bytes(big)
    assert 45 << 20 < nbytes < 52 << 20
    out = tmp_path / "out"
    r = conversion_rss(big["prefix"], out, tiny["prefix"], tmp_path / "tiny-out")
    net = r["peak"] - r["base"]
    # freezing + tf2onnx made several copies in porter's process (and ~50x in TensorFlow's)
    assert net <= 1.5 * nbytes, f"peak RSS grew by {net / nbytes:.2f}x the weights"
    grew = r["children"] - r["warm_children"]
    assert grew <= 0.5 * nbytes, f"a child's peak grew by {grew / nbytes:.2f}x the weights"
    with safe_open(str(out / "model.safetensors"), framework="np") as f:
        saved = {k: f.get_tensor(k) for k in f.keys()}
    kernels = sorted(v.tobytes() for v in saved.values() if v.shape == (2350, 2350))
    assert kernels == sorted(big["tensors"][f"fc{i}/kernel"].T.tobytes() for i in range(2))
