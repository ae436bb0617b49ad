"""Benchmark the generic ONNX converter on the real MODNet: conversion time and CPU latency.

    .venv/bin/python scripts/bench_generic.py [--model PATH] [--threads N] [--size 512 512]

Conversion (no verification) is timed after imports; latency compares the converted module with
onnxruntime at the same thread count (torch.set_num_threads / intra_op_num_threads).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT = ROOT.parent / "shared" / "models" / "modnet_photographic_portrait_matting.onnx"


def _median_ms(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=(512, 512))
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="porter.perf.keep_freed_memory() first (glibc keeps freed blocks, as "
                         "onnxruntime's arena does; affects both runtimes)")
    args = ap.parse_args(argv)
    if args.keep_freed_memory:
        from porter.perf import keep_freed_memory

        if not keep_freed_memory():
            print("bench_generic: error: this C library has no mallopt", file=sys.stderr)
            return 2

    import onnxruntime as ort
    import torch

    from porter.convert import convert_onnx

    torch.set_num_threads(args.threads)
    convert_onnx(args.model)  # warm imports and caches
    t0 = time.perf_counter()
    module = convert_onnx(args.model)
    convert_s = time.perf_counter() - t0
    print(f"convert: {convert_s:.3f} s ({'OK' if convert_s < 1 else 'SLOW'}: target < 1 s)")

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, *args.size), dtype=np.float32)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        diff = float(np.abs(module(xt).numpy() - sess.run(None, {name: x})[0]).max())
        torch_ms = _median_ms(lambda: module(xt), 2, args.runs)
    ort_ms = _median_ms(lambda: sess.run(None, {name: x}), 2, args.runs)
    print(f"threads={args.threads} input={list(x.shape)} max|d|={diff:.2e}")
    print(f"latency: porter {torch_ms:.1f} ms, onnxruntime {ort_ms:.1f} ms, "
          f"ratio {torch_ms / ort_ms:.2f}x (target <= 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
