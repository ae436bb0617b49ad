"""Benchmark the flagship port: conversion time and peak RSS, then torch CPU latency against
onnxruntime CPU latency at the same thread count, as a ratio, in one run.

    .venv/bin/python scripts/bench_modnet.py [MODEL.onnx] [--threads N] [--size 512]
        [--blocks 3] [--runs 5] [--malloc both|default|kept]

Conversion is measured in a fresh child process (import + port, no verification), so the
figure is what `porter convert --verify none` costs, interpreter start-up excluded and reported
apart. Latency: the clean module as ``load_output`` returns it (porter.inference's CPU fast
path) and its plain forward, against onnxruntime (all graph optimisations), in one process, in
alternating blocks so machine noise hits all alike; first with the process's default
allocator, then with glibc keeping freed memory (what ``load_output`` does by default).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchlib import alternating_ms  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
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


def measure_latency(model: Path, threads: int, size: int, blocks: int, runs: int,
                    malloc: str) -> list[dict]:
    """The clean module as users load it (``load_output``: CPU fast path) and as written,
    against onnxruntime, first with the process's default allocator, then with freed memory
    kept (what ``load_output(..., keep_memory=True)`` asks for)."""
    import tempfile

    import numpy as np
    import torch

    import porter
    from porter.inference import plain_forward
    from porter.perf import keep_freed_memory_for_inference
    from porter.verification.runtimes.onnxruntime import OrtRunner
    from porter.zoo.load import load_output

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        porter.convert(model, verify="none", out=Path(tmp) / "out")
        module = load_output(Path(tmp) / "out", keep_memory=False)
    ort = OrtRunner(model, threads=threads, optimization="all")
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        got = module(xt).numpy()
        plain = plain_forward(module, xt).numpy()
    ref = next(iter(ort({"input": x}).values()))

    def run_loaded() -> None:
        with torch.inference_mode():
            module(xt)

    def run_plain() -> None:
        with torch.inference_mode():
            plain_forward(module, xt)

    def run_ort() -> None:
        ort({"input": x})

    results = []
    for mode in (["default", "kept"] if malloc == "both" else [malloc]):
        if mode == "kept" and not keep_freed_memory_for_inference():
            raise SystemExit("bench_modnet: error: this C library has no mallopt")
        med, cpu = alternating_ms({"loaded": run_loaded, "plain": run_plain, "ort": run_ort},
                                  blocks, runs)
        results.append({"malloc": mode, "threads": threads, "size": size,
                        "runs": blocks * runs, "loaded_ms": med["loaded"],
                        "plain_ms": med["plain"], "onnxruntime_ms": med["ort"],
                        "ratio_loaded_over_ort": med["loaded"] / med["ort"],
                        "ratio_plain_over_ort": med["plain"] / med["ort"],
                        "cpu_ms": cpu, "cpu_ratio_loaded_over_ort": cpu["loaded"] / cpu["ort"],
                        "cpu_ratio_plain_over_ort": cpu["plain"] / cpu["ort"],
                        "max_abs_loaded_vs_ort": float(np.abs(got - ref).max()),
                        "max_abs_loaded_vs_plain": float(np.abs(got - plain).max()),
                        "torch": torch.__version__, "onnxruntime": ort.version})
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--blocks", type=int, default=3, help="alternating blocks per runtime")
    ap.add_argument("--runs", type=int, default=5, help="runs per block")
    ap.add_argument("--malloc", choices=("both", "default", "kept"), default="both",
                    help="allocator settings to measure: the process's default, then glibc "
                         "keeping freed memory as load_output does (default: both, in order)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not args.model.is_file():
        print(f"bench_modnet: error: {args.model} not found", file=sys.stderr)
        return 2
    conv = measure_conversion(args.model)
    lats = measure_latency(args.model, args.threads, args.size, args.blocks, args.runs,
                           args.malloc)
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"conversion": conv, "latency": lats, "loadavg_1min": load},
                         indent=2))
        return 0
    print(f"conversion (import + structural port, no verify): {conv['convert_s']:.3f} s; "
          f"imports {conv['imports_s']:.2f} s; whole child process {conv['process_s']:.2f} s; "
          f"peak RSS {conv['peak_rss_mib']:.0f} MiB")
    print(f"  {conv['summary']}")
    for lat in lats:
        alloc = "freed memory kept" if lat["malloc"] == "kept" else "default allocator"
        print(f"latency 1x3x{lat['size']}x{lat['size']}, {lat['threads']} threads, {alloc}, "
              f"median of {lat['runs']}: loaded (fast path) {lat['loaded_ms']:.1f} ms, plain "
              f"forward {lat['plain_ms']:.1f} ms, onnxruntime {lat['onnxruntime_ms']:.1f} ms; "
              f"ratio loaded/onnxruntime {lat['ratio_loaded_over_ort']:.2f}x, plain/onnxruntime "
              f"{lat['ratio_plain_over_ort']:.2f}x; CPU time {lat['cpu_ms']['loaded']:.1f} / "
              f"{lat['cpu_ms']['plain']:.1f} / {lat['cpu_ms']['ort']:.1f} ms, ratios "
              f"{lat['cpu_ratio_loaded_over_ort']:.2f}x / {lat['cpu_ratio_plain_over_ort']:.2f}x")
    print(f"max|d| loaded vs onnxruntime {lats[0]['max_abs_loaded_vs_ort']:.2e}, vs plain "
          f"forward {lats[0]['max_abs_loaded_vs_plain']:.2e}; load average {load:.2f} "
          f"(torch {lats[0]['torch']}, onnxruntime {lats[0]['onnxruntime']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
