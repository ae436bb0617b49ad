"""Benchmark the BEN2 port: conversion of the 94M-parameter checkpoint (time, peak RSS), then
the clean module's CPU forward at 1024² against the upstream network's, same weights, one run.

    .venv/bin/python scripts/bench_ben2.py [--upstream ../shared/reference/ben2_upstream/BEN2.py]
        [--ckpt BEN2_Base.pth] [--runs 1] [--threads N]

Without ``--ckpt`` a seeded random-weight ``BEN2_Base.pth`` (``{"model_state_dict": …}``) is
written to a temporary folder. Conversion runs in a fresh child process: imports are timed
apart, then ``porter.convert(--verify none)`` including writing model.safetensors; peak RSS is
the child's ``ru_maxrss``, also reported net of the post-import baseline. Forward latency: one
warm-up each, then ``--runs`` timed runs, interleaved so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = ROOT.parent / "shared" / "reference" / "ben2_upstream" / "BEN2.py"

_CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
import porter
from porter.pipeline import convert
from porter.graphs import get_port
get_port("ben2")
import safetensors.torch
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t1 = time.perf_counter()
r = convert(sys.argv[1], verify="none", out=sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "convert_s": t2 - t1, "baseline_rss_mib": base,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "timings": r.manifest["timings_s"], "summary": r.manifest["mapping"]["counts"]}))
"""


def write_checkpoint(path: Path) -> int:
    """A seeded random-weight BEN2_Base.pth; returns the weights' size in bytes."""
    from porter.graphs.ben2 import BEN2

    torch.manual_seed(0)
    net = BEN2().eval()
    state = net.state_dict()
    torch.save({"model_state_dict": state}, path)
    return sum(t.numel() * t.element_size() for t in state.values())


def measure_conversion(ckpt: Path, out: Path) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(ckpt), str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    info["process_s"] = time.perf_counter() - t
    return info


def measure_forward(ckpt: Path, upstream: Path, runs: int) -> dict:
    from porter.graphs import get_port
    from porter.importers import open_source
    from porter.verification.runtimes.torch_upstream import UpstreamRunner

    source = open_source(ckpt)
    ported = get_port("ben2").port(source)
    clean = ported.module.eval()
    ref = UpstreamRunner(f"{upstream}:BEN_Base", source.tensors, ["x"], ["alpha"])
    x = np.random.default_rng(0).uniform(-2.0, 2.5, (1, 3, 1024, 1024)).astype(np.float32)
    xt = torch.from_numpy(x)
    times: dict[str, list[float]] = {"clean": [], "upstream": []}
    with torch.inference_mode():
        a = clean(xt)  # warm-up
        b = torch.from_numpy(ref({"x": x})["alpha"])
        for _ in range(runs):
            t = time.perf_counter()
            clean(xt)
            times["clean"].append(time.perf_counter() - t)
            t = time.perf_counter()
            ref({"x": x})
            times["upstream"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"clean_s": med["clean"], "upstream_s": med["upstream"],
            "ratio_clean_over_upstream": med["clean"] / med["upstream"],
            "max_abs_diff": float((a - b).abs().max()), "runs": runs,
            "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", type=Path, default=UPSTREAM)
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--skip-forward", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-ben2-") as tmp:
        ckpt = args.ckpt or Path(tmp) / "BEN2_Base.pth"
        weights = write_checkpoint(ckpt) if args.ckpt is None else ckpt.stat().st_size
        conv = measure_conversion(ckpt, Path(tmp) / "out")
        report = {"weights_mib": weights / 2**20, "conversion": conv,
                  "peak_rss_over_weights": conv["peak_rss_mib"] / (weights / 2**20),
                  "net_rss_over_weights": (conv["peak_rss_mib"] - conv["baseline_rss_mib"])
                  / (weights / 2**20)}
        if not args.skip_forward:
            report["forward_1024"] = measure_forward(ckpt, args.upstream, args.runs)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
