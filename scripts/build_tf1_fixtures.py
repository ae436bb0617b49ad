"""Build TF1 test fixtures with TensorFlow: ``python scripts/build_tf1_fixtures.py OUT [PREFIX…]``.

Run in a child process by the tests (TensorFlow must never be imported into the pytest process:
importing Paddle after it segfaults). Writes, under OUTDIR:

- ``mixed/model.ckpt-7.*``: every dtype TF1 checkpoints hold (float16/32/64, bfloat16, int8/32/64,
  uint8, bool, string), a variable partitioned on axis 0 and one on axis 1, Momentum and Adam
  slots, an EMA shadow and global_step, plus the MetaGraph; ``checkpoint`` state file.
- ``sharded/model.ckpt-1.*``: a sharded save over two devices (two data shards).
- ``frozen/model.pb``: a frozen conv / FusedBatchNorm / depthwise / SAME max-pool / dense net
  (NHWC, unknown spatial size) with a float16, a bfloat16 and a fill-encoded Const.
- ``pnet/PNet-2.*``: a random-weight MTCNN P-Net (graphs.mtcnn.pnet_tf1) after two Momentum
  steps, with its MetaGraph (fixed 8x12x12x3 input).
- ``rnet/RNet-2.*``, ``onet/ONet-2.*``: random-weight MTCNN R-Net / O-Net
  (graphs.mtcnn.rnet_tf1 / onet_tf1, the published names) after two Momentum steps, step counter
  a bare ``Variable`` as in AITTSMD/MTCNN-Tensorflow, MetaGraph with a fixed 6-crop batch.
- ``generic/model.ckpt-3.*``: a conv / batch-norm / depthwise / dense net matching no clean graph,
  trained three Momentum steps with a label placeholder and loss, saved with its MetaGraph.
- ``quant/model.pb``: a frozen graph whose weights are quantized Consts (quint8 MIN_FIRST,
  qint8 SCALED per channel, quint8 MIN_COMBINED) read through ``Dequantize``.
- ``inner/model.pb``: a frozen graph without Placeholders (its image comes from a random op
  and a preprocessing step); callers feed ``pre/scaled:0``.
- ``expected.pkl``: what TensorFlow itself reads: every checkpoint variable
  (``tf.train.load_checkpoint``), every Const (``tf.make_ndarray``), each graph's nodes with
  their inputs and plain attributes, and the frozen net's outputs on two input sizes; and
  every variable of each extra checkpoint PREFIX given (``expected["read"][prefix]``).
"""

from __future__ import annotations

import os
import pickle
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

v1 = tf.compat.v1


def _plain_attrs(node) -> dict:
    out = {}
    for key, val in node.attr.items():
        kind = val.WhichOneof("value")
        if kind in ("s", "i", "f", "b"):
            v = getattr(val, kind)
            out[key] = v.decode() if isinstance(v, bytes) else v
        elif kind == "type":
            out[key] = tf.dtypes.as_dtype(val.type).name
        elif kind == "list" and (val.list.i or val.list.s or val.list.f):
            out[key] = ([int(x) for x in val.list.i] or [x.decode() for x in val.list.s]
                        or [float(x) for x in val.list.f])
    return out


def _graph_summary(graph_def) -> list:
    return [(n.name, n.op, list(n.input), _plain_attrs(n)) for n in graph_def.node]


def _read_all(prefix: str) -> dict:
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def build_mixed(out: str) -> dict:
    g = tf.Graph()
    with g.as_default():
        step = v1.train.get_or_create_global_step()
        rng = np.random.default_rng(0)
        plain = {
            "dtypes/f16": rng.normal(size=(3, 5)).astype(np.float16),
            "dtypes/f64": rng.normal(size=(4,)),
            "dtypes/i8": rng.integers(-128, 127, size=(6,)).astype(np.int8),
            "dtypes/u8": rng.integers(0, 255, size=(2, 3)).astype(np.uint8),
            "dtypes/i32": rng.integers(-(2**31), 2**31 - 1, size=(5,)).astype(np.int32),
            "dtypes/i64": rng.integers(-(2**62), 2**62, size=(3,)).astype(np.int64),
            "dtypes/b": rng.integers(0, 2, size=(7,)).astype(bool),
            "dtypes/big": rng.normal(size=(300, 301)).astype(np.float32),
            "dtypes/empty": np.zeros((0, 3), np.float32),
        }
        for name, val in plain.items():
            v1.Variable(val, name=name)
        v1.Variable(tf.constant(rng.normal(size=(4, 3)), dtype=tf.bfloat16), name="dtypes/bf16")
        v1.Variable([b"a", b"", b"\x00\xffbinary", "ünïcode".encode()], name="dtypes/str")
        v1.get_variable("part/rows", shape=[10, 4], initializer=v1.random_normal_initializer(),
                        partitioner=v1.fixed_size_partitioner(3))
        v1.get_variable("part/cols", shape=[5, 9], initializer=v1.random_normal_initializer(),
                        partitioner=v1.fixed_size_partitioner(2, axis=1))
        x = v1.placeholder(tf.float32, [None, 8, 8, 3], name="x")
        w = v1.get_variable("conv/weights", [3, 3, 3, 4])
        b = v1.get_variable("conv/biases", [4], initializer=v1.zeros_initializer())
        y = tf.nn.bias_add(tf.nn.conv2d(x, w, [1, 1, 1, 1], "SAME"), b)
        k = v1.get_variable("dense/kernel", [4, 2])
        z = tf.matmul(tf.reduce_mean(y, [1, 2]), k)
        loss = tf.reduce_mean(tf.square(z))
        mom = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, var_list=[w, b],
                                                             global_step=step)
        adam = v1.train.AdamOptimizer(0.01).minimize(loss, var_list=[k])
        ema = v1.train.ExponentialMovingAverage(0.9)
        ema_op = ema.apply([w])
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            feed = {x: rng.normal(size=(2, 8, 8, 3)).astype(np.float32)}
            for _ in range(7):
                sess.run([mom, adam], feed)
                sess.run(ema_op)
            prefix = saver.save(sess, os.path.join(out, "mixed", "model.ckpt"), global_step=step)
    return {"prefix": prefix, "tensors": _read_all(prefix),
            "graph": _graph_summary(_meta_graph_def(prefix))}


def _meta_graph_def(prefix: str):
    mg = tf.compat.v1.MetaGraphDef()
    with open(prefix + ".meta", "rb") as fh:
        mg.ParseFromString(fh.read())
    return mg.graph_def


def build_sharded(out: str) -> dict:
    g = tf.Graph()
    with g.as_default():
        rng = np.random.default_rng(1)
        with tf.device("/cpu:0"):
            v1.Variable(rng.normal(size=(6, 2)).astype(np.float32), name="a")
        with tf.device("/cpu:1"):
            v1.Variable(rng.normal(size=(3,)).astype(np.float32), name="b")
        os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
        saver = v1.train.Saver(sharded=True)
        config = v1.ConfigProto(device_count={"CPU": 2})
        with v1.Session(graph=g, config=config) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = saver.save(sess, os.path.join(out, "sharded", "model.ckpt"), global_step=1)
    return {"prefix": prefix, "tensors": _read_all(prefix)}


def build_frozen(out: str) -> dict:
    rng = np.random.default_rng(2)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="input")
        w1 = v1.Variable(rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.3, name="c1/w")
        y = tf.nn.conv2d(x, w1, [1, 2, 2, 1], "SAME", name="c1/conv")
        y, _, _ = v1.nn.fused_batch_norm(
            y, v1.Variable(rng.uniform(0.5, 1.5, 8).astype(np.float32), name="bn/gamma"),
            v1.Variable(rng.normal(size=8).astype(np.float32), name="bn/beta"),
            mean=v1.Variable(rng.normal(size=8).astype(np.float32), name="bn/moving_mean"),
            variance=v1.Variable(rng.uniform(0.1, 2, 8).astype(np.float32),
                                 name="bn/moving_variance"),
            epsilon=0.0123, is_training=False, name="bn/FusedBatchNorm")
        y = tf.nn.relu(y)
        dw = v1.Variable(rng.normal(size=(3, 3, 8, 2)).astype(np.float32) * 0.3, name="dw/w")
        y = tf.nn.depthwise_conv2d(y, dw, [1, 1, 1, 1], "SAME", name="dw/conv")
        y = tf.nn.max_pool2d(y, 3, 2, "SAME", name="pool")
        half = tf.constant(rng.normal(size=16).astype(np.float16), name="half")
        bf = tf.constant(rng.normal(size=16), dtype=tf.bfloat16, name="bf")
        fill = tf.constant(0.25, shape=[16], name="fill")
        y = y + tf.cast(half, tf.float32) + tf.cast(bf, tf.float32) + fill
        feat = tf.reduce_mean(y, [1, 2])
        kernel = v1.Variable(rng.normal(size=(16, 5)).astype(np.float32), name="fc/kernel")
        bias = v1.Variable(rng.normal(size=5).astype(np.float32), name="fc/bias")
        logits = tf.nn.bias_add(tf.matmul(feat, kernel), bias, name="logits")
        tf.nn.softmax(logits, name="prob")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            frozen = v1.graph_util.convert_variables_to_constants(
                sess, g.as_graph_def(), ["prob", "logits"])
    path = os.path.join(out, "frozen", "model.pb")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(frozen.SerializeToString())
    consts = {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in frozen.node
              if n.op == "Const"}
    runs = []
    g2 = tf.Graph()
    with g2.as_default():
        tf.graph_util.import_graph_def(frozen, name="")
        with v1.Session(graph=g2) as sess:
            for shape in [(1, 17, 23, 3), (2, 32, 32, 3)]:
                xin = rng.uniform(-1, 1, size=shape).astype(np.float32)
                runs.append((xin, *sess.run(["logits:0", "prob:0"], {"input:0": xin})))
    return {"path": path, "consts": consts, "graph": _graph_summary(frozen), "runs": runs}


def build_pnet(out: str) -> dict:
    """A random-weight P-Net (graphs.mtcnn.pnet_tf1), two Momentum steps, MetaGraph saved."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from porter.graphs.mtcnn import pnet_tf1

    rng = np.random.default_rng(4)
    g = tf.Graph()
    with g.as_default():
        step = v1.train.get_or_create_global_step()
        inputs, outputs = pnet_tf1(tf, 12, 12, batch=8)
        loss = sum(tf.reduce_mean(tf.square(o)) for o in outputs.values())
        train = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(2):
                sess.run(train, {inputs["image"]: rng.uniform(-1, 1, (8, 12, 12, 3))})
            prefix = saver.save(sess, os.path.join(out, "pnet", "PNet"), global_step=step)
    return {"prefix": prefix, "tensors": _read_all(prefix)}


def _train_and_save(g, inputs, outputs, step, path, batch, size, rng, extra=None):
    loss = sum(tf.reduce_mean(tf.square(o)) for o in outputs.values())
    train = v1.train.MomentumOptimizer(0.01, 0.9).minimize(loss, global_step=step)
    saver = v1.train.Saver()
    with v1.Session(graph=g) as sess:
        sess.run(v1.global_variables_initializer())
        for _ in range(2):
            feed = {inputs["image"]: rng.uniform(-1, 1, (batch, size, size, 3))}
            sess.run(train, {**feed, **(extra or {})})
        return saver.save(sess, path, global_step=step)


def build_refine(out: str, which: str) -> dict:
    """A random-weight R-Net or O-Net with the published names, two Momentum steps."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from porter.graphs.mtcnn import onet_tf1, rnet_tf1

    build, size, stem = {"rnet": (rnet_tf1, 24, "RNet"), "onet": (onet_tf1, 48, "ONet")}[which]
    rng = np.random.default_rng(5 if which == "rnet" else 6)
    g = tf.Graph()
    with g.as_default():
        step = v1.Variable(0, trainable=False)  # AITTSMD's bare step counter, saved as Variable
        inputs, outputs = build(tf, batch=6)
        prefix = _train_and_save(g, inputs, outputs, step, os.path.join(out, which, stem),
                                 6, size, rng)
    return {"prefix": prefix, "tensors": _read_all(prefix)}


def build_generic(out: str) -> dict:
    """A net no clean graph matches, with a training MetaGraph (labels, loss, Momentum)."""
    rng = np.random.default_rng(7)
    g = tf.Graph()
    with g.as_default():
        step = v1.train.get_or_create_global_step()
        x = v1.placeholder(tf.float32, [None, 20, 20, 3], name="images")
        labels = v1.placeholder(tf.int32, [None], name="labels")
        with v1.variable_scope("stem"):
            w = v1.get_variable("weights", [3, 3, 3, 12])
            y = tf.nn.conv2d(x, w, [1, 2, 2, 1], "SAME")
            y, _, _ = v1.nn.fused_batch_norm(
                y, v1.get_variable("gamma", initializer=rng.uniform(0.5, 1.5, 12).astype(np.float32)),
                v1.get_variable("beta", initializer=rng.normal(size=12).astype(np.float32)),
                mean=v1.get_variable("moving_mean", initializer=rng.normal(size=12).astype(np.float32),
                                     trainable=False),
                variance=v1.get_variable("moving_variance", trainable=False,
                                         initializer=rng.uniform(0.2, 2, 12).astype(np.float32)),
                epsilon=0.001, is_training=False)
            y = tf.nn.relu6(y)
        with v1.variable_scope("dw"):
            dw = v1.get_variable("depthwise_weights", [3, 3, 12, 1])
            y = tf.nn.depthwise_conv2d(y, dw, [1, 1, 1, 1], "SAME")
            y = tf.nn.bias_add(y, v1.get_variable("biases", [12]))
        feat = tf.reduce_mean(y, [1, 2])
        with v1.variable_scope("head"):
            logits = tf.nn.bias_add(tf.matmul(feat, v1.get_variable("kernel", [12, 5])),
                                    v1.get_variable("bias", [5]), name="logits")
            tf.nn.softmax(logits, name="probs")
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=logits))
        train = v1.train.MomentumOptimizer(0.05, 0.9).minimize(loss, global_step=step)
        saver = v1.train.Saver()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            for _ in range(3):
                sess.run(train, {x: rng.uniform(-1, 1, (4, 20, 20, 3)),
                                 labels: rng.integers(0, 5, 4)})
            prefix = saver.save(sess, os.path.join(out, "generic", "model.ckpt"),
                                global_step=step)
            xin = rng.uniform(-1, 1, (2, 20, 20, 3)).astype(np.float32)
            probs = sess.run("head/probs:0", {x: xin})
    return {"prefix": prefix, "tensors": _read_all(prefix), "run": (xin, probs)}


def build_named_outputs(out: str) -> dict:
    """Heads after a ``tf.nn.swish`` (whose custom gradient leaves an unnamed ``Identity`` of an
    inner tensor): softmax, ArgMax, a string one, and one named by ``tf.identity(...,
    name="seg")``, the usual TF1 idiom."""
    rng = np.random.default_rng(9)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="image")
        y = tf.nn.conv2d(x, v1.get_variable("w", initializer=rng.normal(
            size=(3, 3, 3, 8)).astype(np.float32) * 0.3), [1, 1, 1, 1], "SAME")
        y = tf.nn.swish(y)
        feat = tf.reduce_mean(y, [1, 2])
        tf.nn.softmax(tf.matmul(feat, v1.get_variable(
            "fc", initializer=rng.normal(size=(8, 4)).astype(np.float32))), name="probs")
        # an ArgMax head (an integer output), and a string one porter cannot output
        tf.argmax(tf.matmul(feat, v1.get_variable(
            "cls", initializer=rng.normal(size=(8, 5)).astype(np.float32))), 1, name="label")
        tf.strings.as_string(tf.matmul(feat, v1.get_variable(
            "captioner", initializer=rng.normal(size=(8, 2)).astype(np.float32))), name="caption")
        seg = tf.nn.conv2d(tf.concat([y, x], -1), v1.get_variable("segw", initializer=rng.normal(
            size=(1, 1, 11, 1)).astype(np.float32)), [1, 1, 1, 1], "VALID")
        tf.identity(tf.sigmoid(seg), name="seg")
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = v1.train.Saver().save(sess, os.path.join(out, "named", "model.ckpt"))
            xin = rng.uniform(-1, 1, (1, 12, 10, 3)).astype(np.float32)
            run = sess.run(["probs:0", "seg:0", "label:0"], {x: xin})
    return {"prefix": prefix, "run": (xin, *run)}


def build_while(out: str) -> dict:
    """A recurrence over the time axis as TF 1.x graphs hold it: tf.while_loop in v1 control
    flow (Enter/Merge/Switch/NextIteration/Exit), which tf2onnx turns into an ONNX Loop."""
    rng = np.random.default_rng(10)
    v1.disable_control_flow_v2()
    try:
        g = tf.Graph()
        with g.as_default():
            x = v1.placeholder(tf.float32, [None, None, 6], name="seq")
            wx = v1.get_variable("wx", initializer=rng.normal(size=(6, 8)).astype(np.float32))
            wh = v1.get_variable("wh", initializer=rng.normal(size=(8, 8)).astype(np.float32) * 0.3)
            xs = tf.transpose(x, [1, 0, 2])
            steps = tf.shape(xs)[0]

            def body(t, h):
                return t + 1, tf.tanh(tf.matmul(xs[t], wx) + tf.matmul(h, wh))

            _, h = tf.while_loop(lambda t, h: t < steps, body,
                                 [tf.constant(0), tf.zeros([tf.shape(x)[0], 8])])
            tf.identity(tf.matmul(h, v1.get_variable("proj", initializer=rng.normal(
                size=(8, 3)).astype(np.float32))), name="logits")
            with v1.Session(graph=g) as sess:
                sess.run(v1.global_variables_initializer())
                prefix = v1.train.Saver().save(sess, os.path.join(out, "while", "model.ckpt"))
                xin = rng.uniform(-1, 1, (2, 5, 6)).astype(np.float32)
                logits = sess.run("logits:0", {x: xin})
    finally:
        v1.enable_control_flow_v2()
    return {"prefix": prefix, "run": (xin, logits)}


def _quantized(value: np.ndarray, lo, hi, dtype, mode: str, **kw):
    with v1.Session(graph=tf.Graph()) as sess:
        return sess.run(tf.quantization.quantize(value, lo, hi, dtype, mode=mode, **kw))


def build_quant(out: str) -> dict:
    """Weights as quantized Consts read through Dequantize (three modes, one per channel)."""
    rng = np.random.default_rng(8)
    w = rng.normal(size=(3, 3, 3, 8)).astype(np.float32) * 0.3
    b = rng.normal(size=8).astype(np.float32)
    k = rng.normal(size=(8, 4)).astype(np.float32)
    kmax = np.abs(k).max(0)
    qw = (*_quantized(w, float(w.min()), float(w.max()), tf.quint8, "MIN_FIRST"), tf.quint8)
    qb = (*_quantized(b, float(b.min()), float(b.max()), tf.quint8, "MIN_COMBINED"), tf.quint8)
    qk = (*_quantized(k, -kmax, kmax, tf.qint8, "SCALED", axis=1, narrow_range=True), tf.qint8)
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [None, 16, 16, 3], name="input")

        def deq(q, name, mode, **kw):
            return tf.quantization.dequantize(
                tf.constant(q[0], dtype=q[3], name=f"{name}/quantized"),
                tf.constant(q[1], name=f"{name}/min"), tf.constant(q[2], name=f"{name}/max"),
                mode=mode, name=f"{name}/dequantize", **kw)

        y = tf.nn.conv2d(x, deq(qw, "conv/w", "MIN_FIRST"), [1, 1, 1, 1], "SAME")
        y = tf.nn.relu(tf.nn.bias_add(y, deq(qb, "conv/b", "MIN_COMBINED")))
        feat = tf.reduce_mean(y, [1, 2])
        kq = deq(qk, "fc/k", "SCALED", axis=1, narrow_range=True)
        tf.nn.softmax(tf.matmul(feat, kq), name="prob")
        gd = v1.graph_util.extract_sub_graph(g.as_graph_def(), ["prob"])
        with v1.Session(graph=g) as sess:
            xin = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
            prob = sess.run("prob:0", {x: xin})
            deq = {name: sess.run(f"{name}/dequantize:0") for name in ("conv/w", "conv/b", "fc/k")}
    path = os.path.join(out, "quant", "model.pb")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(gd.SerializeToString())
    specs = {"conv/w": (qw, "MIN_FIRST", -1, False), "conv/b": (qb, "MIN_COMBINED", -1, False),
             "fc/k": (qk, "SCALED", 1, True)}
    return {"path": path, "graph": _graph_summary(gd), "run": (xin, prob),
            # what TF's own Dequantize gives: (qtype, codes, min, max, mode, axis, narrow, out)
            "dequantized": {n: (q[3].name, np.asarray(q[0]), q[1], q[2], mode, axis, narrow,
                                deq[n]) for n, (q, mode, axis, narrow) in specs.items()},
            "quantized": {n.name: tf.make_ndarray(n.attr["value"].tensor) for n in gd.node
                          if n.op == "Const" and n.name.endswith("/quantized")}}


def build_inner(out: str) -> dict:
    """No Placeholder: the image is a random op, scaled, then conv + dense (feed pre/scaled:0)."""
    rng = np.random.default_rng(9)
    g = tf.Graph()
    with g.as_default():
        raw = tf.random.uniform([1, 14, 14, 3], 0, 255, name="source/raw")
        x = tf.multiply(tf.subtract(raw, 127.5), 1 / 128, name="pre/scaled")
        w = tf.constant(rng.normal(size=(3, 3, 3, 6)).astype(np.float32) * 0.2, name="conv/w")
        y = tf.nn.relu(tf.nn.conv2d(x, w, [1, 1, 1, 1], "VALID", name="conv/conv"))
        k = tf.constant(rng.normal(size=(6, 3)).astype(np.float32), name="fc/k")
        tf.identity(tf.matmul(tf.reduce_max(y, [1, 2]), k), name="scores")
        gd = g.as_graph_def()
        with v1.Session(graph=g) as sess:
            xin = rng.uniform(-1, 1, (1, 14, 14, 3)).astype(np.float32)
            scores = sess.run("scores:0", {"pre/scaled:0": xin})
    path = os.path.join(out, "inner", "model.pb")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(gd.SerializeToString())
    return {"path": path, "graph": _graph_summary(gd), "run": (xin, scores)}


def main(out: str, read: list[str]) -> None:
    os.makedirs(out, exist_ok=True)
    v1.disable_eager_execution()
    expected = {"mixed": build_mixed(out), "frozen": build_frozen(out), "pnet": build_pnet(out),
                "rnet": build_refine(out, "rnet"), "onet": build_refine(out, "onet"),
                "generic": build_generic(out), "quant": build_quant(out),
                "inner": build_inner(out), "named": build_named_outputs(out),
                "while": build_while(out),
                "read": {prefix: _read_all(prefix) for prefix in read}}
    try:
        expected["sharded"] = build_sharded(out)
    except Exception as exc:  # recorded, so a test can say why it has no sharded fixture
        expected["sharded"] = {"error": f"{type(exc).__name__}: {exc}"}
    expected["tensorflow"] = tf.__version__
    with open(os.path.join(out, "expected.pkl"), "wb") as fh:
        pickle.dump(expected, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
