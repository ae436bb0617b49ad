"""Build Paddle fixtures (and Paddle's own reading of them) for porter's tests.

    python scripts/build_paddle_fixtures.py OUTDIR            # everything, one child per mode
    python scripts/build_paddle_fixtures.py OUTDIR params|legacy|pir

Writes ``.pdparams``/``.pdopt`` with ``paddle.save`` and inference models with
``paddle.jit.save`` (legacy ProgramDesc with ``FLAGS_enable_pir_api=0``, PIR JSON with ``=1``),
and beside each ``<file>.ref.pkl``: what ``paddle.load`` / Paddle's static loader read back
(names -> arrays, op lists), so tests compare porter's reading with Paddle's bit for bit.
Never imported by porter; run as a child so paddle never shares a process with TensorFlow.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np

SEED = 20240607


def build_small_net(num_classes: int = 3):
    """A tiny CNN touching every layout rule: Conv2D, BatchNorm, PReLU, ConvTranspose, Linear."""
    import paddle
    from paddle import nn

    class SmallNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2D(8)
            self.act = nn.PReLU(8)
            self.up = nn.Conv2DTranspose(8, 4, 2, stride=2, groups=2)
            self.pool = nn.AdaptiveAvgPool2D(1)
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            y = self.up(self.act(self.bn(self.conv(x))))
            y = paddle.flatten(self.pool(y), 1)
            return nn.functional.softmax(self.fc(y), axis=-1)

    paddle.seed(SEED)
    net = SmallNet()
    # Non-trivial BN statistics so a wrong rename cannot pass unnoticed.
    rng = np.random.default_rng(SEED)
    net.bn._mean.set_value(rng.standard_normal(8).astype("float32"))
    net.bn._variance.set_value(rng.uniform(0.5, 2.0, 8).astype("float32"))
    net.eval()
    return net


def build_ops_net(pir: bool):
    """A small net touching the ops of common PaddleOCR/PaddleSeg/PaddleDetection models, with
    float-list attributes (``nearest_interp_v2`` ``scale``) that paddle2onnx 2.1 rejects.

    Paddle 3.3 cannot save some ops (sigmoid, matmul, gelu, tanh ...) as a legacy ProgramDesc,
    so the legacy variant (``pir=False``) swaps those for ops it can save.
    """
    import paddle
    from paddle import nn
    from paddle.nn import functional as F

    class OpsNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2D(8)
            self.dw = nn.Conv2D(8, 8, 3, padding=1, groups=8, stride=2)
            self.up = nn.Conv2DTranspose(8, 4, 2, stride=2)
            self.ln = nn.LayerNorm(4)
            self.prelu = nn.PReLU(4)
            self.fc = nn.Linear(4, 5)
            self.head = nn.Conv2D(4, 2, 1)

        def forward(self, x):
            y = F.relu(self.bn(self.conv(x)))
            y = F.hardswish(self.dw(y))
            z = F.interpolate(y, scale_factor=[2.0, 2.0], mode="nearest")
            w = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
            gate = F.sigmoid(w) if pir else F.hardsigmoid(w)
            y = paddle.concat([z * gate, w + 1.0], axis=1)
            y = F.max_pool2d(y, 3, 2, padding=1)
            a, b = paddle.split(y, 2, axis=1)
            y = self.prelu(self.up(a - b * 0.5))
            n, c = y.shape[0], y.shape[1]
            t = self.ln(paddle.transpose(y, [0, 2, 3, 1]))
            t = paddle.reshape(t, [n, -1, c])
            if pir:
                t = paddle.matmul(t, t, transpose_y=True) * 0.5
            t = F.softmax(t, axis=-1).mean(axis=1)
            f = paddle.flatten(F.adaptive_avg_pool2d(y, 1), 1)
            g = self.fc(paddle.clip(f, -0.5, 0.5))
            g = F.gelu(g) if pir else F.leaky_relu(F.relu6(g), 0.1)
            seg = self.head(F.pad(F.avg_pool2d(y, 2, 2), [1, 0, 0, 1], mode="replicate"))
            seg = F.interpolate(seg, size=x.shape[2:], mode="bilinear", align_corners=True)
            if pir:
                seg = paddle.unsqueeze(paddle.argmax(seg, axis=1), 1).astype("float32")
            return g, t, seg

    paddle.seed(SEED)
    net = OpsNet()
    rng = np.random.default_rng(SEED)
    net.bn._mean.set_value(rng.standard_normal(8).astype("float32"))
    net.bn._variance.set_value(rng.uniform(0.5, 2.0, 8).astype("float32"))
    net.eval()
    return net


def build_edge_net():
    """Padding and resizing rules where Paddle and torch differ: SAME and asymmetric padding,
    inclusive average pooling, ceil mode, ``align_mode=1`` and ``align_corners`` resizes, a
    transposed convolution with an ``output_size``."""
    import paddle
    from paddle import nn
    from paddle.nn import functional as F

    class EdgeNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.same = nn.Conv2D(3, 4, 3, stride=2, padding="SAME")
            self.asym = nn.Conv2D(4, 4, 3, padding=[1, 0, 2, 1])
            self.up = nn.Conv2DTranspose(4, 3, 3, stride=2, padding=1)

        def forward(self, x):
            y = F.relu6(self.asym(self.same(x)))
            p1 = F.avg_pool2d(y, 3, 2, padding=1, exclusive=False)
            p2 = F.max_pool2d(y, 3, 2, padding="SAME")
            p3 = F.avg_pool2d(y, 2, 2, ceil_mode=True)
            a = F.interpolate(p1, scale_factor=1.5, mode="bilinear", align_corners=False,
                              align_mode=1)
            b = F.interpolate(p2, size=[7, 9], mode="nearest")
            c = F.interpolate(p3, size=[7, 9], mode="bilinear", align_corners=True)
            u = self.up(y, output_size=[y.shape[2] * 2, y.shape[3] * 2])
            p4 = F.avg_pool2d(y, 3, 2, padding=1, ceil_mode=True, exclusive=False)
            p5 = F.avg_pool2d(y, 2, 2, padding=[0, 1, 1, 0])
            p6 = F.max_pool2d(y, 2, 2, padding=[1, 0, 0, 1], ceil_mode=True)
            return (a, b + c, paddle.tanh(u) if paddle.framework.in_pir_mode() else u, p4, p5,
                    p6)

    paddle.seed(SEED + 1)
    net = EdgeNet()
    net.eval()
    return net


def build_extra_net(pir: bool):
    """Tensor-manipulation and less common ops (pixel_shuffle, add_n, roll, gather, tile,
    expand, stack, where, topk ...); the legacy variant keeps to what Paddle 3.3 can save."""
    import paddle
    from paddle import nn
    from paddle.nn import functional as F

    class ExtraNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2D(3, 8, 3, padding=1)
            self.gn = nn.GroupNorm(2, 8)
            self.inorm = nn.InstanceNorm2D(8)

        def forward(self, x):
            y = self.conv(x)
            y = self.gn(y) + self.inorm(y)
            y = F.pixel_shuffle(y, 2)                          # 2 channels, 2x size
            y = paddle.add_n([y, y * 2.0, F.hardtanh(y, -0.5, 0.5)])
            y = paddle.roll(y, shifts=1, axis=2) if pir else y
            s = paddle.stack([y[:, 0], y[:, 1]], axis=1)
            s = paddle.where(s > 0, s, s * 0.1)
            s = paddle.tile(paddle.mean(s, axis=[2, 3], keepdim=True), [1, 1, 2, 3])
            idx = paddle.to_tensor([1, 0], dtype="int64")
            g = paddle.gather(s, idx, axis=1)
            e = paddle.expand(g[:, :1], [g.shape[0], 4, 2, 3])
            out = [e, paddle.squeeze(paddle.unsqueeze(s, [0, 2]), [0])]
            if pir:
                v, _ = paddle.topk(paddle.flatten(y, 1), 3)
                out.append(F.log_sigmoid(v) + paddle.cumsum(v, axis=1))
            return tuple(out)

    paddle.seed(SEED + 2)
    net = ExtraNet()
    net.eval()
    return net


def build_lstm_net():
    """A bidirectional two-layer LSTM (PaddleOCR's CRNN head); its dropout state is a
    non-persistable parameter that the params file does not hold. Paddle 3.3 saves it only
    as PIR."""
    import paddle
    from paddle import nn

    class LSTMNet(nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(6, 5, num_layers=2, direction="bidirect")

        def forward(self, x):
            return self.lstm(x)[0]

    paddle.seed(SEED + 3)
    net = LSTMNet()
    net.eval()
    return net


def _flatten(obj, prefix=""):
    """name -> array from what paddle.load(return_numpy=True) gives (same naming as porter)."""
    out = {}
    if isinstance(obj, np.ndarray):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("StructuredToParameterName@@",):
                continue
            out.update(_flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    return out


def _ref(path: Path, obj) -> None:
    with open(str(path) + ".ref.pkl", "wb") as fh:
        pickle.dump(obj, fh)


def build_params(out: Path) -> None:
    import paddle

    net = build_small_net()
    paddle.save(net.state_dict(), str(out / "net.pdparams"))
    paddle.save(net.state_dict(), str(out / "net_p2.pdparams"), protocol=2)
    rng = np.random.default_rng(SEED)
    dtypes = {
        "f32": paddle.to_tensor(rng.standard_normal((3, 4)).astype("float32")),
        "f16": paddle.to_tensor(rng.standard_normal((5,)).astype("float16")),
        "f64": paddle.to_tensor(rng.standard_normal((2, 2)).astype("float64")),
        "i64": paddle.to_tensor(rng.integers(-2**40, 2**40, (4,)).astype("int64")),
        "i32": paddle.to_tensor(rng.integers(-9, 9, (2, 3)).astype("int32")),
        "u8": paddle.to_tensor(rng.integers(0, 255, (6,)).astype("uint8")),
        "b": paddle.to_tensor(rng.integers(0, 2, (7,)).astype("bool")),
        "scalar": paddle.to_tensor(np.float32(1.5)),
    }
    paddle.save(dtypes, str(out / "dtypes.pdparams"))
    # Not a flat state dict: paddle.save pickles tensors as (name, ndarray) tuples.
    nested = {"model": net.state_dict(), "epoch": 7, "note": "nested"}
    paddle.save(nested, str(out / "nested.pdparams"))
    opt = paddle.optimizer.Adam(learning_rate=1e-3, parameters=net.parameters())
    net.train()
    loss = net(paddle.to_tensor(rng.standard_normal((2, 3, 8, 8)).astype("float32"))).sum()
    loss.backward()
    opt.step()
    paddle.save(opt.state_dict(), str(out / "net.pdopt"))
    for name in ("net.pdparams", "net_p2.pdparams", "dtypes.pdparams", "nested.pdparams",
                 "net.pdopt"):
        loaded = paddle.load(str(out / name), return_numpy=True)
        _ref(out / name, {"arrays": _flatten(loaded), "paddle": paddle.__version__})


def build_inference(out: Path, mode: str) -> None:
    import paddle

    net = build_small_net()
    prefix = out / mode / "inference"
    spec = [paddle.static.InputSpec([None, 3, 16, 16], "float32", name="x")]
    paddle.jit.save(net, str(prefix), input_spec=spec)
    paddle.enable_static()
    exe = paddle.static.Executor(paddle.CPUPlace())
    program, feeds, fetches = paddle.static.load_inference_model(str(prefix), exe)
    scope = paddle.static.global_scope()
    arrays, ops = {}, []
    if mode == "legacy":
        for var in program.list_vars():
            if var.persistable and var.name not in ("feed", "fetch"):
                arrays[var.name] = np.array(scope.find_var(var.name).get_tensor())
        for op in program.global_block().ops:
            ops.append({"type": op.type,
                        "inputs": {k: list(op.input(k)) for k in op.input_names},
                        "outputs": {k: list(op.output(k)) for k in op.output_names}})
    else:
        for op in program.global_block().ops:
            ops.append({"type": op.name()})
            if op.name() == "builtin.parameter":
                name = op.attrs()["parameter_name"]
                arrays[name] = np.array(scope.find_var(name).get_tensor())
    x = np.random.default_rng(SEED).standard_normal((2, 3, 16, 16)).astype("float32")
    (y,) = exe.run(program, feed={feeds[0]: x}, fetch_list=fetches)
    _ref(prefix, {"arrays": arrays, "ops": ops, "feeds": list(feeds), "x": x, "y": np.array(y),
                  "paddle": paddle.__version__})
    paddle.disable_static()
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", name="x")]
    paddle.jit.save(build_ops_net(mode == "pir"), str(out / mode / "opsnet" / "inference"),
                    input_spec=spec)
    paddle.jit.save(build_edge_net(), str(out / mode / "edgenet" / "inference"),
                    input_spec=spec)
    paddle.jit.save(build_extra_net(mode == "pir"), str(out / mode / "extranet" / "inference"),
                    input_spec=spec)
    if mode == "pir":
        paddle.jit.save(build_lstm_net(), str(out / mode / "lstm" / "inference"),
                        input_spec=[paddle.static.InputSpec([None, None, 6], "float32",
                                                            name="x")])


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    mode = argv[2] if len(argv) > 2 else "all"
    if mode == "all":
        for m in ("params", "legacy", "pir"):
            env = {**os.environ, "FLAGS_enable_pir_api": "0" if m == "legacy" else "1",
                   "GLOG_minloglevel": "2", "OMP_NUM_THREADS": "1"}
            subprocess.run([sys.executable, __file__, str(out), m], check=True, env=env)
        return 0
    if mode == "params":
        build_params(out)
    else:
        (out / mode).mkdir(exist_ok=True)
        build_inference(out, mode)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
