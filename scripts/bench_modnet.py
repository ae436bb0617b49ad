"""Benchmark the flagship port: conversion time and peak RSS, then torch CPU latency against
onnxruntime CPU latency at the same thread count, as a ratio, in one run.

    .venv/bin/python scripts/bench_modnet.py [MODEL.onnx] [--threads N] [--size 512] [--runs 20]

Conversion is measured in a fresh child process (import + port, no verification), so the
figure is what `porter convert --verify none` costs, interpreter start-up excluded and reported
apart. Latency: warm-up runs, then the median of ``--runs`` timed runs for each runtime,
interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "models" / "modnet_photographic_portrait_matting.onnx"

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch

import porter
from porter import graphs
t1 = time.perf_counter()
source = porter.open(sys.argv[1])
port = graphs.get_port("modnet")
assert port.matches(source)
ported = port.port(source)
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "convert_s": t2 - t1,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "summary": ported.mapping.summary()}))
"""


def measure_conversion(model: Path) -> dict:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", _CHILD, str(model)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    info["process_s"] = time.perf_counter() - t
    return info


def measure_latency(model: Path, threads: int, size: int, runs: int) -> dict:
    import numpy as np
    import torch

    import porter
    from porter import graphs
    from porter.verification.runtimes.onnxruntime import OrtRunner

    torch.set_num_threads(threads)
    source = porter.open(model)
    module = graphs.get_port("modnet").port(source).module.eval()
    ort = OrtRunner(model, threads=threads, optimization="all")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    xt = torch.from_numpy(x)

    def run_torch() -> None:
        with torch.inference_mode():
            module(xt)

    from torch.fx.experimental.optimization import fuse

    fused = fuse(module)  # torch's own eval-time Conv+BatchNorm folding (a copy)

    def run_fused() -> None:
        with torch.inference_mode():
            fused(xt)

    def run_ort() -> None:
        ort({"input": x})

    timed = {"torch": (run_torch, []), "torch_fused": (run_fused, []), "ort": (run_ort, [])}
    for fn, _ in timed.values():
        for _ in range(3):
            fn()
    for _ in range(runs):
        for fn, acc in timed.values():
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    med = {k: statistics.median(v[1]) for k, v in timed.items()}
    return {"threads": threads, "size": size, "runs": runs, "torch_ms": med["torch"] * 1e3,
            "torch_fused_ms": med["torch_fused"] * 1e3, "onnxruntime_ms": med["ort"] * 1e3,
            "ratio_torch_over_ort": med["torch"] / med["ort"],
            "ratio_fused_over_ort": med["torch_fused"] / med["ort"],
            "torch": torch.__version__, "onnxruntime": ort.version}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="porter.perf.keep_freed_memory(): glibc keeps freed blocks for reuse, "
                         "as onnxruntime's arena does (the whole process, both runtimes)")
    args = ap.parse_args()
    if not args.model.is_file():
        print(f"bench_modnet: error: {args.model} not found", file=sys.stderr)
        return 2
    if args.keep_freed_memory:
        from porter.perf import keep_freed_memory

        if not keep_freed_memory():
            print("bench_modnet: error: this C library has no mallopt", file=sys.stderr)
            return 2
    conv = measure_conversion(args.model)
    lat = measure_latency(args.model, args.threads, args.size, args.runs)
    if args.json:
        print(json.dumps({"conversion": conv, "latency": lat}, indent=2))
        return 0
    print(f"conversion (import + structural port, no verify): {conv['convert_s']:.3f} s; "
          f"imports {conv['imports_s']:.2f} s; whole child process {conv['process_s']:.2f} s; "
          f"peak RSS {conv['peak_rss_mib']:.0f} MiB")
    print(f"  {conv['summary']}")
    alloc = "freed memory kept" if args.keep_freed_memory else "default malloc"
    print(f"latency 1x3x{lat['size']}x{lat['size']}, {lat['threads']} threads, {alloc}, median of "
          f"{lat['runs']}: torch {lat['torch_ms']:.1f} ms, onnxruntime {lat['onnxruntime_ms']:.1f} "
          f"ms, ratio torch/onnxruntime {lat['ratio_torch_over_ort']:.2f}x; with torch.fx "
          f"Conv+BN fusion {lat['torch_fused_ms']:.1f} ms, "
          f"{lat['ratio_fused_over_ort']:.2f}x (torch {lat['torch']}, "
          f"onnxruntime {lat['onnxruntime']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
