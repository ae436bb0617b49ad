"""Benchmark the generic ONNX converter on the real MODNet: conversion time and CPU latency.

    .venv/bin/python scripts/bench_generic.py [--model PATH] [--threads N] [--size 512 512]

Conversion (no verification) is timed after imports. Latency compares the converted module (in
inference mode) with onnxruntime at the same thread count (torch.set_num_threads /
intra_op_num_threads), in one process: blocks of runs alternate between the two so that drift
in machine load hits both. It is measured twice, first with glibc's default malloc and then
after porter.perf.keep_freed_memory(), which gives torch the block reuse that onnxruntime's
arena already has (onnxruntime allocates from its arena either way). Benchmark on an idle
machine: OpenMP slows down badly when other processes load the cores.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT = ROOT.parent / "shared" / "models" / "modnet_photographic_portrait_matting.onnx"
TARGET = 1.2


def paired_ms(a: Callable[[], object], b: Callable[[], object], blocks: int,
              per_block: int) -> tuple[float, float]:
    """Median ms of ``a`` and of ``b``, run in alternating blocks after two warm-up calls each."""
    for fn in (a, b, a, b):
        fn()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(blocks):
        for fn, out in ((a, times[0]), (b, times[1])):
            for _ in range(per_block):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
    return statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--size", type=int, nargs=2, default=(512, 512))
    ap.add_argument("--blocks", type=int, default=3, help="alternating blocks per runtime")
    ap.add_argument("--runs", type=int, default=5, help="runs per block")
    ap.add_argument("--malloc", choices=("both", "default", "kept"), default="both",
                    help="which allocator settings to measure (default: both, in that order)")
    args = ap.parse_args(argv)
    if not args.model.is_file():
        print(f"bench_generic: error: {args.model} not found", file=sys.stderr)
        return 2

    import onnxruntime as ort
    import torch

    from porter.converters import convert_onnx
    from porter.perf import keep_freed_memory

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
    print(f"threads={args.threads} input={list(x.shape)} max|d|={diff:.2e} "
          f"median of {args.blocks}x{args.runs} runs each (torch {torch.__version__}, "
          f"onnxruntime {ort.__version__})")

    def run_torch() -> None:
        with torch.inference_mode():
            module(xt)

    modes = ["default", "kept"] if args.malloc == "both" else [args.malloc]
    for mode in modes:
        if mode == "kept" and not keep_freed_memory():
            print("bench_generic: error: this C library has no mallopt", file=sys.stderr)
            return 2
        torch_ms, ort_ms = paired_ms(run_torch, lambda: sess.run(None, {name: x}),
                                     args.blocks, args.runs)
        ratio = torch_ms / ort_ms
        label = "default malloc" if mode == "default" else "freed memory kept"
        print(f"latency, {label}: porter {torch_ms:.1f} ms, onnxruntime {ort_ms:.1f} ms, "
              f"ratio {ratio:.2f}x ({'OK' if ratio <= TARGET else 'over'}: target <= {TARGET}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
