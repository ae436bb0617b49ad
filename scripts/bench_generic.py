"""Benchmark the generic ONNX converter on the real MODNet: conversion time and CPU latency.

    .venv/bin/python scripts/bench_generic.py [--model PATH] [--threads N] [--size 512 512]

Conversion (no verification) is timed after imports. Latency compares the converted module (in
inference mode) with onnxruntime at the same thread count (torch.set_num_threads /
intra_op_num_threads), in one process: blocks of runs alternate between them so that drift
in machine load hits all alike. Two torch modules: the converter's own (``convert_onnx``, its
plan with CPU kernels) and what users load (``load_output`` of a written generic conversion:
model.py with porter.inference's fast path). It is measured twice, first with the process's
default allocator and then after glibc is told to keep freed memory (what ``load_output`` does
by default), which gives torch the block reuse that onnxruntime's arena already has. Benchmark on an idle
machine: OpenMP slows down badly when other processes load the cores.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from benchlib import alternating_ms  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT = ROOT.parent / "shared" / "models" / "modnet_photographic_portrait_matting.onnx"
TARGET = 1.0


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

    import tempfile

    import onnxruntime as ort
    import torch

    import porter
    from porter.converters import convert_onnx
    from porter.inference import plain_forward
    from porter.perf import keep_freed_memory_for_inference
    from porter.zoo.load import load_output

    torch.set_num_threads(args.threads)
    convert_onnx(args.model)  # warm imports and caches
    t0 = time.perf_counter()
    module = convert_onnx(args.model)
    convert_s = time.perf_counter() - t0
    print(f"convert: {convert_s:.3f} s ({'OK' if convert_s < 1 else 'SLOW'}: target < 1 s)")
    with tempfile.TemporaryDirectory() as tmp:  # what users load: the written model.py
        porter.convert(args.model, graph="generic", verify="none", out=Path(tmp) / "out")
        loaded = load_output(Path(tmp) / "out", trust_code=True, keep_memory=False)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).random((1, 3, *args.size), dtype=np.float32)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        want = sess.run(None, {name: x})[0]
        diff = float(np.abs(module(xt).numpy() - want).max())
        diff_loaded = float(np.abs(loaded(xt).numpy() - want).max())
    print(f"threads={args.threads} input={list(x.shape)} max|d| plan {diff:.2e}, loaded "
          f"model.py {diff_loaded:.2e}; load average {os.getloadavg()[0]:.2f}; "
          f"median of {args.blocks}x{args.runs} runs each (torch {torch.__version__}, "
          f"onnxruntime {ort.__version__})")

    def run_plan() -> None:
        with torch.inference_mode():
            module(xt)

    def run_loaded() -> None:
        with torch.inference_mode():
            loaded(xt)

    def run_written() -> None:  # model.py as written (what load_output gave before the fast path)
        with torch.inference_mode():
            plain_forward(loaded, xt)

    modes = ["default", "kept"] if args.malloc == "both" else [args.malloc]
    for mode in modes:
        if mode == "kept" and not keep_freed_memory_for_inference():
            print("bench_generic: error: this C library has no mallopt", file=sys.stderr)
            return 2
        med, cpu = alternating_ms({"plan": run_plan, "loaded": run_loaded,
                                   "written": run_written,
                                   "ort": lambda: sess.run(None, {name: x})},
                                  args.blocks, args.runs)
        label = "default allocator" if mode == "default" else "freed memory kept"
        print(f"latency, {label}: convert_onnx module {med['plan']:.1f} ms "
              f"({med['plan'] / med['ort']:.2f}x), loaded model.py (fast path) "
              f"{med['loaded']:.1f} ms ({med['loaded'] / med['ort']:.2f}x), model.py as "
              f"written {med['written']:.1f} ms ({med['written'] / med['ort']:.2f}x), onnxruntime "
              f"{med['ort']:.1f} ms (target <= {TARGET}x); CPU time ratios "
              + ", ".join(f"{k} {cpu[k] / cpu['ort']:.2f}x" for k in ("plan", "loaded", "written")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
