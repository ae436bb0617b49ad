"""Benchmark converting big models: peak RSS of ``porter.convert(--verify none)`` against the
size of the weights, one synthetic model at a time, each converted in a fresh child process.

    .venv/bin/python scripts/bench_stream.py [--models onnx,paddle,tf1] [--gb 2.0,1.0,1.0]
        [--tmp /tmp] [--keep] [--root CHECKOUT]

Models (random weights, written by the frameworks' own writers into a temporary folder on local
disk, removed afterwards unless ``--keep``):

- ``onnx``: large Conv and Gemm layers, ~2 GB of float32 initializers in external data
  (``model.onnx.data``, written tensor by tensor; the graph is checked by ``onnx.checker``);
- ``paddle``: a Paddle inference model (``paddle.jit.save``: ``.pdmodel`` + ~1 GB
  ``.pdiparams``) of Linear layers: the Paddle format porter converts without a clean graph;
  also a ~1 GB ``.pdparams`` (``paddle.save``), opened by porter and every tensor read (a bare
  ``.pdparams`` has no op graph, so it only converts onto a clean graph);
- ``tf1``: a TF1 MetaGraph + checkpoint (``tf.compat.v1.train.Saver``) of ~1 GB of MatMul
  weights.

Each conversion child reports peak RSS (``ru_maxrss``) of itself and of its own children (the
largest of them: TF's child, tf2onnx, paddle2onnx …), each child's own peak (``VmHWM``,
sampled every 20 ms while it runs, named by what it runs), its RSS after imports (the
baseline), and the figures net of it. Floors (issue 14): peak ≤ 1.25x the weights for ONNX,
≤ 1.5x for the others (TF1: porter's process and each child).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"onnx": 1.25, "paddle": 1.5, "pdparams": 1.5, "tf1": 1.5}

_CHILD = r"""
import json, os, resource, sys, threading, time
t0 = time.perf_counter()
import numpy, torch, onnx  # what every conversion imports anyway
import porter
from porter.pipeline import convert
mode, src, out, kwargs = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
import porter.converters.ops, porter.importers, porter.generic
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
kids = {}  # pid -> [what it runs, peak MiB (VmHWM as last sampled)]
def watch():  # each descendant's own peak, sampled every 20 ms (exact max: RUSAGE_CHILDREN)
    me = os.getpid()
    while True:
        parents = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as fh:
                    parents[int(pid)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
        for pid in parents:
            p = pid
            while p in parents and p != me:
                p = parents[p]
            if p != me or pid == me:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
                with open(f"/proc/{pid}/status") as fh:
                    hwm = next(int(l.split()[1]) / 1024 for l in fh if l.startswith("VmHWM:"))
            except (OSError, StopIteration):
                continue
            what = ("tf2onnx" if "tf2onnx" in cmd else "tensorflow child" if
                    "runtimes.child" in cmd else "paddle2onnx" if "paddle2onnx" in cmd
                    else cmd[:60])
            entry = kids.setdefault(pid, [what, 0.0])
            entry[0] = what if entry[0].startswith(("/", "python")) else entry[0]
            entry[1] = max(entry[1], hwm)
        time.sleep(0.02)
threading.Thread(target=watch, daemon=True).start()
base = rss()
t1 = time.perf_counter()
if mode == "open":  # open and read every tensor (a bare .pdparams has no graph to convert)
    s = porter.open(src)
    n = sum(t.numpy().nbytes for t in s.tensors.values())
else:
    r = convert(src, verify="none", out=out, progress=lambda m: print(m, file=sys.stderr),
                **kwargs)
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "convert_s": t2 - t1, "base_MiB": base,
                  "peak_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children_peak_MiB":
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "each_child_MiB": [v for _, v in sorted(kids.items())]}))
"""


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def build_onnx(folder: Path, gb: float) -> tuple[Path, int]:
    """x[1,3,16,16] -> Conv 3->C -> k x Conv CxC 3x3 -> GAP -> Gemm C->F -> m x Gemm FxF ->
    Gemm F->10; C and F sized so the initializers add up to about ``gb`` GB."""
    import onnx
    from onnx import TensorProto, helper

    c, f = 1024, 8192
    target = gb * 1e9
    conv_bytes = c * c * 9 * 4
    gemm_bytes = f * f * 4
    k = max(1, int(target * 0.25 // conv_bytes))
    m = max(1, int((target - k * conv_bytes - c * f * 4) // gemm_bytes))
    rng = np.random.default_rng(0)
    data = folder / "model.onnx.data"
    inits, nodes, offset = [], [], 0
    with open(data, "wb") as fh:
        def add(name: str, shape: tuple[int, ...], fan_in: int) -> str:
            nonlocal offset
            arr = rng.standard_normal(shape, dtype=np.float32)
            arr *= np.float32(1.0 / np.sqrt(fan_in))
            fh.write(arr.tobytes())
            t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(shape),
                            data_location=TensorProto.EXTERNAL)
            for key, val in (("location", data.name), ("offset", str(offset)),
                             ("length", str(arr.nbytes))):
                t.external_data.add(key=key, value=val)
            offset += arr.nbytes
            inits.append(t)
            return name

        x = "x"
        chans = [3] + [c] * (k + 1)
        for i in range(k + 1):
            w = add(f"conv{i}.w", (chans[i + 1], chans[i], 3, 3), chans[i] * 9)
            b = add(f"conv{i}.b", (chans[i + 1],), chans[i] * 9)
            nodes += [helper.make_node("Conv", [x, w, b], [f"c{i}"], pads=[1, 1, 1, 1]),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
            x = f"r{i}"
        nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
                  helper.make_node("Flatten", ["gap"], ["flat"])]
        x, dims = "flat", [c] + [f] * (m + 1) + [10]
        for i in range(len(dims) - 1):
            w = add(f"fc{i}.w", (dims[i + 1], dims[i]), dims[i])
            b = add(f"fc{i}.b", (dims[i + 1],), dims[i])
            nodes.append(helper.make_node("Gemm", [x, w, b], [f"g{i}"], transB=1))
            x = f"g{i}"
    graph = helper.make_graph(
        nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path))
    return path, offset


_PADDLE = r"""
import sys, numpy as np, paddle
folder, gb, kind = sys.argv[1], float(sys.argv[2]), sys.argv[3]
f = 8192
n = max(1, round(gb * 1e9 / (f * f * 4)))
paddle.seed(0)
layers = []
for i in range(n):
    layers += [paddle.nn.Linear(f, f), paddle.nn.ReLU()]
net = paddle.nn.Sequential(*layers)
net.eval()
if kind == "pdparams":
    paddle.save(net.state_dict(), folder + "/model.pdparams")
else:
    spec = [paddle.static.InputSpec([None, f], "float32", "x")]
    paddle.jit.save(net, folder + "/inference", input_spec=spec)
print(sum(int(np.prod(p.shape)) * 4 for p in net.parameters()))
"""

_TF1 = r"""
import sys, numpy as np, tensorflow as tf
folder, gb = sys.argv[1], float(sys.argv[2])
tf1 = tf.compat.v1
tf1.disable_eager_execution()
f = 8192
n = max(1, round(gb * 1e9 / (f * f * 4)))
total = 0
g = tf1.Graph()
with g.as_default():
    x = tf1.placeholder(tf.float32, [None, f], name="x")
    y = x
    rng = np.random.default_rng(0)
    for i in range(n):
        w = tf1.get_variable(f"fc{i}/w", [f, f], initializer=tf1.random_normal_initializer(
            stddev=1 / np.sqrt(f), seed=i))
        b = tf1.get_variable(f"fc{i}/b", [f], initializer=tf1.zeros_initializer())
        y = tf.nn.relu(tf.matmul(y, w) + b)
        total += (f * f + f) * 4
    tf.identity(y, name="out")
    saver = tf1.train.Saver()
    with tf1.Session(graph=g) as s:
        s.run(tf1.global_variables_initializer())
        saver.save(s, folder + "/model")
print(total)
"""


def _framework_build(code: str, folder: Path, gb: float, *extra: str) -> int:
    proc = subprocess.run([sys.executable, "-c", code, str(folder), str(gb), *extra],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return int(proc.stdout.strip().splitlines()[-1])


def build(kind: str, folder: Path, gb: float) -> tuple[Path, int, str]:
    """(what to convert, bytes of weights, child mode)."""
    if kind == "onnx":
        path, n = build_onnx(folder, gb)
        return path, n, "convert"
    if kind == "paddle":
        n = _framework_build(_PADDLE, folder, gb, "inference")
        model = next(p for p in (folder / "inference.pdmodel", folder / "inference.json")
                     if p.exists())  # Paddle 3 writes a PIR program (.json)
        return model, n, "convert"
    if kind == "pdparams":
        n = _framework_build(_PADDLE, folder, gb, "pdparams")
        return folder / "model.pdparams", n, "open"
    if kind == "tf1":
        n = _framework_build(_TF1, folder, gb)
        return folder / "model.meta", n, "convert"
    raise SystemExit(f"unknown model {kind!r}")


def measure(mode: str, src: Path, out: Path, root: Path = ROOT, **kwargs: object) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, str(src), str(out),
                           json.dumps(kwargs)],
                          capture_output=True, text=True, cwd=root)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["process_s"] = time.perf_counter() - t
    info["log"] = proc.stderr.strip().splitlines()[-6:]
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="onnx,paddle,pdparams,tf1")
    ap.add_argument("--gb", default="", help="sizes in GB, one per model (default 2 for onnx, "
                    "1 for the others)")
    ap.add_argument("--tmp", default="/tmp")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--root", type=Path, default=ROOT,
                    help="the porter checkout the conversion child imports (for before/after)")
    args = ap.parse_args()
    kinds = args.models.split(",")
    sizes = [float(s) for s in args.gb.split(",")] if args.gb else [
        2.0 if k == "onnx" else 1.0 for k in kinds]
    for kind, gb in zip(kinds, sizes):
        folder = Path(tempfile.mkdtemp(prefix=f"porter-bench-stream-{kind}-", dir=args.tmp))
        try:
            t = time.perf_counter()
            src, nbytes, mode = build(kind, folder, gb)
            built = time.perf_counter() - t
            r = measure(mode, src, folder / "out", args.root,
                        **({"outputs": ["out:0"]} if kind == "tf1" else {}))
            peak = r["peak_MiB"] * 2**20
            net = (r["peak_MiB"] - r["base_MiB"]) * 2**20
            floor = FLOORS[kind]
            out_bytes = sum(p.stat().st_size for p in (folder / "out").rglob("*")
                            if p.is_file()) if (folder / "out").exists() else 0
            print(json.dumps({
                "model": kind, "mode": mode, "weights": _mib(nbytes), "built_s": round(built, 1),
                "imports_s": round(r["imports_s"], 2), "convert_s": round(r["convert_s"], 2),
                "base": _mib(r["base_MiB"] * 2**20), "peak": _mib(peak),
                "peak/weights": round(peak / nbytes, 3), "net/weights": round(net / nbytes, 3),
                "children_peak": _mib(r["children_peak_MiB"] * 2**20),
                "children_peak/weights": round(r["children_peak_MiB"] * 2**20 / nbytes, 3),
                "each_child": [f"{what} {_mib(peak * 2**20)} ({peak * 2**20 / nbytes:.2f}x)"
                               for what, peak in r["each_child_MiB"]],
                "floor": floor, "meets_floor": peak / nbytes <= floor,
                "output": _mib(out_bytes)}), flush=True)
        finally:
            if args.keep:
                print(f"kept {folder}", file=sys.stderr)
            else:
                shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
