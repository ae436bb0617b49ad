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
