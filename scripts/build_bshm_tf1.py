"""Build a random-weight BSHM in TensorFlow 1.x (tf.compat.v1) and save it the way TF1 did.

Writes to OUTDIR:
- ``bshm.ckpt.{index,data-*,meta}`` + ``checkpoint``: a name-based ``train.Saver`` checkpoint
  with Adam slots, ``beta{1,2}_power`` and ``global_step`` present (a port must drop them);
- ``bshm_frozen.pb``: the inference GraphDef with variables folded to Const nodes;
- ``reference.npz``: for every ``--sizes`` entry (torch NCHW shape ``NxCxHxW``) the input
  ``<size>/image`` (NCHW, RGB 0-255) and TF's ``<size>/{coarse_mask,unified_mask,alpha}``
  (NCHW), from the live session; the frozen graph is re-run and must agree exactly.

The network is written here independently of ``graphs/bshm.py`` (raw ``tf.nn`` ops and
``get_variable`` under named scopes, NHWC, SAME padding, fused BatchNorm epsilon 1e-3), so
parity between the two is a real cross-check. Run as its own process:

    python scripts/build_bshm_tf1.py OUTDIR --sizes 1x3x64x64 2x3x96x128 --channels 4 4 4
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

tf1 = tf.compat.v1

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3


class Builder:
    """Creates variables with seeded numpy values and records them for loading after init."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.values: list[tuple[tf1.Variable, np.ndarray]] = []

    def var(self, name: str, value: np.ndarray, trainable: bool = True) -> tf1.Variable:
        v = tf1.get_variable(name, shape=value.shape, dtype=tf.float32,
                             initializer=tf1.zeros_initializer(), trainable=trainable)
        self.values.append((v, value.astype(np.float32)))
        return v

    def conv_bn_relu(self, x: tf.Tensor, scope: str, cout: int, stride: int = 1) -> tf.Tensor:
        cin = int(x.shape[-1])
        with tf1.variable_scope(scope):
            k = self.var("kernel", self.rng.normal(0, np.sqrt(2 / (9 * cin)), (3, 3, cin, cout)))
            y = tf.nn.conv2d(x, k, strides=[1, stride, stride, 1], padding="SAME")
            with tf1.variable_scope("batch_normalization"):
                gamma = self.var("gamma", self.rng.uniform(0.5, 1.5, cout))
                beta = self.var("beta", self.rng.normal(0, 0.1, cout))
                mean = self.var("moving_mean", self.rng.normal(0, 0.2, cout), trainable=False)
                var = self.var("moving_variance", self.rng.uniform(0.5, 2.0, cout),
                               trainable=False)
            y, _, _ = tf1.nn.fused_batch_norm(y, gamma, beta, mean, var, epsilon=BN_EPS,
                                              is_training=False)
            return tf.nn.relu(y)

    def head(self, x: tf.Tensor, scope: str) -> tf.Tensor:
        cin = int(x.shape[-1])
        with tf1.variable_scope(scope):
            k = self.var("kernel", self.rng.normal(0, np.sqrt(1 / (9 * cin)), (3, 3, cin, 1)))
            b = self.var("bias", self.rng.normal(0, 0.1, 1))
            return tf.sigmoid(tf.nn.bias_add(tf.nn.conv2d(x, k, 1, "SAME"), b))

    def up_concat(self, x: tf.Tensor, skip: tf.Tensor) -> tf.Tensor:
        size = tf.shape(skip)[1:3]
        x = tf1.image.resize_bilinear(x, size, align_corners=False, half_pixel_centers=True)
        return tf.concat([x, skip], axis=3)

    def mpn(self, x: tf.Tensor, c: int) -> tf.Tensor:
        """U-Net: two convs per level, 2x2 max-pools, bilinear upsampling + skips."""
        with tf1.variable_scope("mpn"):
            skips = []
            for i, width in enumerate((c, 2 * c, 4 * c), start=1):
                x = self.conv_bn_relu(x, f"enc{i}/conv1", width)
                x = self.conv_bn_relu(x, f"enc{i}/conv2", width)
                skips.append(x)
                x = tf.nn.max_pool2d(x, 2, 2, "SAME")
            x = self.conv_bn_relu(x, "bridge/conv1", 8 * c)
            x = self.conv_bn_relu(x, "bridge/conv2", 8 * c)
            for i, width in ((3, 4 * c), (2, 2 * c), (1, c)):
                with tf1.variable_scope(f"dec{i}/up"):
                    x = self.up_concat(x, skips[i - 1])
                x = self.conv_bn_relu(x, f"dec{i}/conv1", width)
                x = self.conv_bn_relu(x, f"dec{i}/conv2", width)
            return self.head(x, "head")

    def qun(self, x: tf.Tensor, q: int) -> tf.Tensor:
        """Small U-Net with strided convs: normalises coarse-mask quality."""
        with tf1.variable_scope("qun"):
            e1 = self.conv_bn_relu(x, "enc1/conv1", q)
            e2 = self.conv_bn_relu(e1, "enc2/conv1", 2 * q, stride=2)
            e2 = self.conv_bn_relu(e2, "enc2/conv2", 2 * q)
            x = self.conv_bn_relu(e2, "enc3/conv1", 4 * q, stride=2)
            x = self.conv_bn_relu(x, "enc3/conv2", 4 * q)
            for i, width, skip in ((2, 2 * q, e2), (1, q, e1)):
                with tf1.variable_scope(f"dec{i}/up"):
                    x = self.up_concat(x, skip)
                x = self.conv_bn_relu(x, f"dec{i}/conv1", width)
            return self.head(x, "head")

    def mrn(self, x: tf.Tensor, m: int) -> tf.Tensor:
        """Encoder-decoder with strided convs: image + unified mask -> alpha."""
        with tf1.variable_scope("mrn"):
            skips = []
            for i, width in enumerate((m, 2 * m, 4 * m, 8 * m), start=1):
                x = self.conv_bn_relu(x, f"enc{i}/conv1", width, stride=1 if i == 1 else 2)
                x = self.conv_bn_relu(x, f"enc{i}/conv2", width)
                skips.append(x)
            for i, width in ((3, 4 * m), (2, 2 * m), (1, m)):
                with tf1.variable_scope(f"dec{i}/up"):
                    x = self.up_concat(x, skips[i - 1])
                x = self.conv_bn_relu(x, f"dec{i}/conv1", width)
                x = self.conv_bn_relu(x, f"dec{i}/conv2", width)
            return self.head(x, "head")


def build(channels: tuple[int, int, int], seed: int) -> tuple[Builder, dict[str, tf.Tensor]]:
    """The inference graph (in the default graph) plus its named endpoints."""
    b = Builder(seed)
    image = tf1.placeholder(tf.float32, [None, None, None, 3], name="input_image")
    with tf1.name_scope("preprocess"):
        mean = tf.constant(np.array(MEAN, np.float32), name="mean")
        std = tf.constant(np.array(STD, np.float32), name="std")
        x = (image / 255.0 - mean) / std
    coarse = b.mpn(x, channels[0])
    unified = b.qun(tf.concat([x, coarse], axis=3, name="qun_input"), channels[1])
    alpha = b.mrn(tf.concat([x, unified], axis=3, name="mrn_input"), channels[2])
    return b, {"image": image, "coarse_mask": tf.identity(coarse, name="coarse_mask"),
               "unified_mask": tf.identity(unified, name="unified_mask"),
               "alpha": tf.identity(alpha, name="alpha")}


OUTPUTS = ("coarse_mask", "unified_mask", "alpha")


def run_frozen(pb: Path, feeds: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """Run the frozen GraphDef in a fresh graph, NHWC in and out."""
    gd = tf1.GraphDef()
    gd.ParseFromString(pb.read_bytes())
    with tf.Graph().as_default() as g:
        tf1.import_graph_def(gd, name="")
        with tf1.Session(graph=g) as sess:
            return {k: dict(zip(OUTPUTS, sess.run([f"{o}:0" for o in OUTPUTS],
                                                  {"input_image:0": v})))
                    for k, v in feeds.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--sizes", nargs="+", default=["1x3x64x64", "2x3x96x128"],
                    help="torch NCHW input shapes for the reference outputs")
    ap.add_argument("--channels", nargs=3, type=int, default=[32, 16, 32],
                    metavar=("MPN", "QUN", "MRN"), help="base widths of the three networks")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.outdir.mkdir(parents=True, exist_ok=True)

    tf1.disable_eager_execution()
    tf1.disable_resource_variables()  # classic RefVariables: `<name>/read` in the graph
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(args.seed)
        b, ends = build(tuple(args.channels), args.seed)
        step = tf1.train.get_or_create_global_step()
        loss = tf.reduce_mean(ends["alpha"])
        tf1.train.AdamOptimizer(1e-3).minimize(loss, global_step=step)
        saver = tf1.train.Saver()
        with tf1.Session(graph=graph) as sess:
            sess.run(tf1.global_variables_initializer())
            for v, value in b.values:
                v.load(value, sess)
            step.load(1234, sess)
            saver.save(sess, str(args.outdir / "bshm.ckpt"))
            frozen = tf1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), list(OUTPUTS))
            (args.outdir / "bshm_frozen.pb").write_bytes(frozen.SerializeToString())

            ref: dict[str, np.ndarray] = {}
            feeds: dict[str, np.ndarray] = {}
            for i, size in enumerate(args.sizes):
                shape = tuple(int(d) for d in size.split("x"))
                x = np.random.default_rng(args.seed + 100 + i).uniform(0, 255, shape)
                x = x.astype(np.float32)
                feeds[size] = x.transpose(0, 2, 3, 1)
                outs = sess.run([ends[o] for o in OUTPUTS], {ends["image"]: feeds[size]})
                ref[f"{size}/image"] = x
                for name, y in zip(OUTPUTS, outs):
                    ref[f"{size}/{name}"] = y.transpose(0, 3, 1, 2)

    for size, outs in run_frozen(args.outdir / "bshm_frozen.pb", feeds).items():
        for name, y in outs.items():
            if not np.array_equal(y.transpose(0, 3, 1, 2), ref[f"{size}/{name}"]):
                print(f"frozen graph disagrees with the session on {size}/{name}",
                      file=sys.stderr)
                return 1
    np.savez(args.outdir / "reference.npz", **ref)
    info = {"channels": args.channels, "seed": args.seed, "bn_eps": BN_EPS,
            "sizes": args.sizes, "tensorflow": tf.__version__,
            "alpha_range": {s: [float(ref[f"{s}/alpha"].min()), float(ref[f"{s}/alpha"].max())]
                            for s in args.sizes}}
    (args.outdir / "build_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
