"""Benchmark the flagship command end to end, against its peers measured in the same run.

    .venv/bin/python scripts/bench_flagship.py [MODEL.onnx] [--runs 5] [--checkout DIR]

Each round runs, in fresh processes and in this order, so machine noise hits all alike:

- the flagship: ``python -m porter -v convert MODEL --to torch --verify npu --out TMP``, timed
  from outside (wall) and by porter itself (the manifest's ``timings_s``: import, map, verify,
  npu, write);
- the floor: ``python -c "import torch, onnxruntime"``, what any such command pays first;
- onnxruntime alone on the same parity cases (the shapes and seeds the flagship's manifest
  lists), in a fresh process: import, session (porter's settings), one run per case;
- ``python -m porter --help``, which must not import torch (issue 14 item 5).

``--overlap-bound`` measures instead what running the reference while torch is imported could
gain at most: fresh processes that import, open, port and run both runtimes on the cases, with
onnxruntime started in a thread before ``import torch`` (as if the cases were known without
torch) or after the module's own runs (as the command does).

Prints the per-step medians, the wall medians and each ratio against its peer, and the load
average before and after (``os.getloadavg``): on a shared machine say which it was.
``--checkout`` (repeatable) runs other porter checkouts (say an export of the commit before)
with this same interpreter, interleaved round by round, for before/after figures in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "models" / "modnet_photographic_portrait_matting.onnx"
STEPS = ("import", "map", "verify", "npu", "write", "total")

_FLOOR = "import torch, onnxruntime"

_ORT_PEER = r"""
import json, sys
import numpy as np
from porter.verification.parity import random_cases
from porter.verification.runtimes.onnxruntime import OrtRunner
model, cases = sys.argv[1], json.loads(sys.argv[2])
runner = OrtRunner(model)
name = runner.input_names[0]
for case in cases:
    (x,) = random_cases(name, [case["shape"]], seed=case["seed"])
    runner(x.inputs)
"""


_AUDIT_CPU = r"""
import json, sys, time
import numpy as np, torch
torch.set_num_threads(1)
from porter.importers import open_source
from porter.graphs import find_ports
from porter.substitutes import apply_substitutes
from porter.verification.npu import audit
from porter.verification.runtimes.torch_ import TorchRunner
source = open_source(sys.argv[1])
(port,) = find_ports(source)
ported = port.port(source)
module, _ = apply_substitutes(ported.module.eval())
runner = TorchRunner(module, ported.input_names, ported.output_names)
case = min(port.cases(source, ported), key=lambda c: sum(v.size for v in c.inputs.values()))
clock = time.process_time
t = clock()
if sys.argv[2] == "export":
    runner(case.inputs)  # the parity forward, plain
    forward = clock() - t
    t = clock()
    dyn = port.dynamic_shapes(ported) if port.dynamic_shapes is not None else None
    report = audit.audit_module(module, port.example_inputs(ported), dynamic_shapes=dyn)
else:
    with audit.recording(module) as captured:
        runner(case.inputs)  # the parity forward, recorded
    forward = clock() - t
    t = clock()
    report = audit.audit_module(module, (), captured=captured)
print(json.dumps({"forward": forward, "audit": clock() - t, "ops": len(report["ops"]),
                  "missing": len(report["missing"]), "dynamo": "torch._dynamo" in sys.modules}))
"""


_OVERLAP = r"""
import copy, json, sys, threading, time
t0 = time.perf_counter()
import numpy as np
model, mode, threads, shapes = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
done = {}
def reference():
    from porter.verification.runtimes.onnxruntime import OrtRunner
    from porter.verification.parity import random_cases
    runner = OrtRunner(model, threads=threads)
    for case in shapes:
        (x,) = random_cases(runner.input_names[0], [case["shape"]], seed=case["seed"])
        runner(x.inputs)
    done["reference"] = time.perf_counter() - t0
thread = threading.Thread(target=reference)
if mode == "overlap":
    thread.start()
import torch
from porter.importers import open_source
from porter.graphs import find_ports
from porter.inference import optimize_for_inference
from porter.substitutes import apply_substitutes
from porter.verification.runtimes.torch_ import TorchRunner
source = open_source(model)
(port,) = find_ports(source)
ported = port.port(source)
module, _ = apply_substitutes(ported.module.eval())
cases = port.cases(source, ported)
setup = time.perf_counter() - t0
runner = TorchRunner(optimize_for_inference(copy.copy(module)), ported.input_names,
                     ported.output_names)
for case in cases:
    runner(case.inputs)
candidate = time.perf_counter() - t0
if mode != "overlap":
    thread.start()
thread.join()
print(json.dumps({"setup": setup, "candidate": candidate, "reference": done["reference"],
                  "all": time.perf_counter() - t0,
                  "cases": [{"shape": list(c.inputs[ported.input_names[0]].shape), "seed": c.seed}
                            for c in cases]}))
"""


def overlap_bound(model: Path, runs: int) -> None:
    """Print medians of the import-to-parity wall time with the reference run after the module
    (serial, as now) and in a thread started before ``import torch`` (one and two threads)."""
    def child(mode: str, threads: int, shapes: list) -> dict:
        return _json_child(_OVERLAP, "overlap", model, mode, threads, json.dumps(shapes))

    shapes = child("serial", 2, [])["cases"]
    modes = {"serial, 2 threads": ("serial", 2), "overlap, 2 threads": ("overlap", 2),
             "overlap, 1 thread": ("overlap", 1)}
    got: dict[str, list[dict]] = {k: [] for k in modes}
    for _ in range(runs):
        for label, (mode, threads) in modes.items():
            got[label].append(child(mode, threads, shapes))
    print(f"import -> open -> port -> both runtimes on {len(shapes)} cases, fresh processes, "
          f"medians of {runs}")
    base = _median([r["all"] for r in got["serial, 2 threads"]])
    for label, rows in got.items():
        total = _median([r["all"] for r in rows])
        print(f"- {label:<18} setup {_median([r['setup'] for r in rows]):.2f} s, module done "
              f"{_median([r['candidate'] for r in rows]):.2f} s, reference done "
              f"{_median([r['reference'] for r in rows]):.2f} s, all "
              f"{total:.2f} s ({total / base:.2f}x serial)")


def audit_cpu(model: Path, mode: str) -> dict:
    """CPU seconds (one torch thread, fresh process) of the smallest case's parity forward and
    of the audit after it, capturing by ``mode``: "export" or "parity" (the recording)."""
    return _json_child(_AUDIT_CPU, "audit", model, mode)


def _json_child(code: str, what: str, *args: object) -> dict:
    """Run ``code`` in a fresh interpreter with ``args``; the JSON of its last stdout line."""
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench: {what} child failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _wall(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd[:4])}… failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def flagship(model: Path, checkout: Path) -> tuple[float, dict, list[dict]]:
    """Wall time, porter's own step timings, and the parity cases (shape, seed) it checked."""
    with tempfile.TemporaryDirectory(prefix="bench-flagship-") as tmp:
        out = Path(tmp) / "out"
        wall = _wall([sys.executable, "-m", "porter", "-v", "convert", str(model), "--to",
                      "torch", "--verify", "npu", "--out", str(out)], checkout)
        manifest = json.loads((out / "manifest.json").read_text())
    cases = [{"shape": c["shapes"][next(iter(c["shapes"]))], "seed": c["seed"]}
             for c in manifest["parity"]["cases"]]
    npu = manifest["npu"]
    info = {**manifest["timings_s"], "capture": npu.get("capture"), "ops": len(npu["ops"]),
            "missing": len(npu["missing"]), "worst_max_abs": manifest["parity"]["worst_max_abs"],
            "fp16_worst": npu.get("fp16", {}).get("worst_max_abs")}
    return wall, info, cases


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", type=Path, default=DEFAULT)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--checkout", type=Path, action="append", default=[],
                    help="porter checkout to run the flagship and --help from (repeatable: "
                         "each round runs every checkout; default: this one)")
    ap.add_argument("--audit-cpu", action="store_true",
                    help="instead: CPU seconds of the NPU audit by each capture method, one "
                         "torch thread, fresh processes (robust to a busy machine)")
    ap.add_argument("--overlap-bound", action="store_true",
                    help="instead: the most that running the reference during `import torch` "
                         "could gain (fresh processes, serial against overlapped)")
    args = ap.parse_args()
    model = args.model.resolve()
    if args.overlap_bound:
        overlap_bound(model, args.runs)
        return
    if args.audit_cpu:
        got: dict[str, list[dict]] = {"export": [], "parity": []}
        for _ in range(args.runs):
            for mode in got:
                got[mode].append(audit_cpu(model, mode))
        for mode, rows in got.items():
            r = rows[-1]
            print(f"audit by {mode:<6}: parity forward {_median([x['forward'] for x in rows]):.3f}"
                  f" CPU s, audit {_median([x['audit'] for x in rows]):.3f} CPU s (median of "
                  f"{len(rows)}); {r['ops']} ops, {r['missing']} missing; torch._dynamo "
                  f"imported: {r['dynamo']}")
        return
    checkouts = [c.resolve() for c in args.checkout] or [ROOT]
    if not model.is_file():
        sys.exit(f"bench: {model} not found (see ../shared/models/README.md)")
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {"floor": [], "ort_cases": []}
    runs = {c: {"flagship": [], "help": [], "steps": {s: [] for s in STEPS}, "last": {}}
            for c in checkouts}
    cases: list[dict] = []
    for _ in range(args.runs):
        for c in checkouts:
            wall, info, cases = flagship(model, c)
            runs[c]["flagship"].append(wall)
            for s in STEPS:
                if s in info:
                    runs[c]["steps"][s].append(info[s])
            runs[c]["last"] = info
        walls["floor"].append(_wall([sys.executable, "-c", _FLOOR], ROOT))
        walls["ort_cases"].append(_wall([sys.executable, "-c", _ORT_PEER, str(model),
                                         json.dumps(cases)], ROOT))
        for c in checkouts:
            runs[c]["help"].append(_wall([sys.executable, "-m", "porter", "--help"], c))
    load_after = os.getloadavg()
    floor, ort_cases = _median(walls["floor"]), _median(walls["ort_cases"])
    print(f"flagship: porter -v convert {model.name} --to torch --verify npu --out TMP "
          f"({args.runs} rounds of fresh processes, checkouts interleaved)")
    for c in checkouts:
        r, last = runs[c], runs[c]["last"]
        wall = _median(r["flagship"])
        print(f"- checkout {c}")
        print(f"  audit: {last['capture']} capture, {last['ops']} ATen ops, {last['missing']} "
              f"without an NPU kernel; parity worst max|Δ| {last['worst_max_abs']:.3e}; "
              f"fp16 worst max|Δ| {last['fp16_worst']}")
        print("  porter's steps (median s): " + ", ".join(
            f"{s} {_median(v):.2f}" for s, v in r["steps"].items() if v))
        print(f"  wall median {wall:.2f} s (runs: " + " ".join(f"{w:.2f}" for w in r["flagship"])
              + f"); `porter --help` median {_median(r['help']):.2f} s")
        print(f"  ratios: flagship / floor {wall / floor:.2f}x, flagship / onnxruntime-on-the-"
              f"cases {wall / ort_cases:.2f}x, flagship - floor {wall - floor:.2f} s")
    print(f"floor `python -c \"{_FLOOR}\"`: median {floor:.2f} s")
    print(f"onnxruntime alone on the same {len(cases)} cases (fresh process): "
          f"median {ort_cases:.2f} s")
    print("load average (1, 5, 15 min): before " + " ".join(f"{x:.2f}" for x in load_before)
          + ", after " + " ".join(f"{x:.2f}" for x in load_after)
          + f" on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
