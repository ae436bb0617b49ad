"""Throughput of ``porter zoo build``: a fixture catalog on 2 Ray workers vs one process.

Usage: ``python scripts/bench_zoo_build.py [--models 8] [--size 96]``

Both runs build the same fixture catalog (scripts/build_zoo_fixture_catalog.py: N small ONNX
models, no failing entries) from an empty cache into an empty zoo, so both fetch through pip,
convert, verify against onnxruntime and publish every entry:

- sequential: ``porter zoo build CATALOG`` in a fresh process (imports paid once);
- Ray: a local cluster of 2 CPUs started here first (a team's cluster is already up, so its
  start-up is reported but not counted), then ``build_catalog(..., ray="auto")``: one task per
  entry; with ``--entries-per-worker 1`` (the default) each entry in a child process of its
  own, forked from the node's shared forkserver (porter.zoo.node_server: imports paid once per
  node, and kept between builds and jobs until it idles out); with 0 every entry in the Ray
  worker itself (no child).

Each round of Ray builds starts *cold* (no node server: its imports are paid in the build)
and repeats *warm* (the server is up, as on a standing cluster that built in the last few
minutes), each build into a new zoo from a new cache. Last, ``porter zoo build --ray ADDRESS``
runs from a fresh process against the same cluster, as a user runs it from the shell (a new
Ray job, so fresh workers; the driver's start counts as the sequential run's does), cold and
then warm. Prints the wall times, each ratio, and the load average around each run (the
machine may be shared; the ratio is only as good as the load was steady).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _fixtures():
    spec = importlib.util.spec_from_file_location(
        "build_zoo_fixture_catalog", ROOT / "scripts" / "build_zoo_fixture_catalog.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--size", type=int, default=96, help="input height and width")
    ap.add_argument("--entries-per-worker", type=int, nargs="+", default=[1, 0],
                    help="Ray runs to make: 1 = a forked child per entry, 0 = in the worker")
    ap.add_argument("--rounds", type=int, default=1,
                    help="builds per --entries-per-worker value; after the first build the "
                         "cluster's workers are warm (what a team's standing cluster has)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="porter-bench-build-") as tmp:
        tmp = Path(tmp)
        catalog = _fixtures().make_catalog(tmp / "fixture", models=args.models,
                                           size=args.size, failures=False, npu=False)
        wheels = str(catalog.parent / "wheels")
        env = {**os.environ, "PORTER_CACHE": str(tmp / "cache-seq"),
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        print(f"catalog: {args.models} models, input 1x3x{args.size}x{args.size}; "
              f"cpus {os.cpu_count()}")
        print(f"load before sequential: {_load()}")
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "porter", "zoo", "build", str(catalog),
                               "--zoo", str(tmp / "zoo-seq"), "--find-links", wheels, "--json"],
                              env=env, capture_output=True, text=True)
        seq = time.perf_counter() - t
        if proc.returncode != 0:
            sys.exit(f"sequential build failed: {proc.stderr[-2000:]}")
        print(f"sequential: {seq:.1f} s   (load after {_load()})")

        import ray

        sys.path.insert(0, str(ROOT))  # this checkout's porter, here and in the workers
        os.environ["PYTHONPATH"] = env["PYTHONPATH"]
        os.environ["PORTER_CACHE"] = str(tmp / "cache-ray")
        # the CLI run below is a second process: it can join only a cluster without Ray's
        # per-session token (this cluster listens on loopback and lives as long as the script)
        os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"] = "disabled"
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        print(f"ray start-up (not counted): {time.perf_counter() - t:.1f} s")
        from porter.zoo.build import build_catalog
        from porter.zoo.node_server import stop_node_server

        def ray_build(label: str, n: int, key: str) -> None:
            os.environ["PORTER_CACHE"] = str(tmp / f"cache-{key}")  # fetched and built anew
            print(f"load before ray: {_load()}")
            t = time.perf_counter()
            results = build_catalog(catalog, zoo=tmp / f"zoo-{key}", ray="auto",
                                    pip_args=["--no-index", "--find-links", wheels],
                                    entries_per_worker=n)
            par = time.perf_counter() - t
            bad = [r for r in results if r.status != "published"]
            if bad:
                sys.exit(f"ray build failed: {[(r.name, r.error) for r in bad]}")
            pids = len({r.worker_pid for r in results})
            print(f"ray, 2 workers, {label}, --entries-per-worker {n}: {par:.1f} s, "
                  f"{pids} building processes   (load after {_load()})")
            print(f"ratio ray/sequential: {par / seq:.2f}  (target <= 0.65)")

        for n in args.entries_per_worker:
            for round_ in range(args.rounds):
                stop_node_server()
                ray_build("cold node server", n, f"ray-{n}-{round_}-cold")
                ray_build("warm node server", n, f"ray-{n}-{round_}-warm")
        # what `porter zoo build --ray ADDRESS` costs from the shell: a new driver is a new Ray
        # job with workers of its own, and the driver's own start (Python, ray, porter) counts
        # as it does for the sequential run; the node server is shared across jobs
        address = ray.get_runtime_context().gcs_address
        for round_ in range(args.rounds):
            for state in ("cold", "warm"):
                if state == "cold":
                    stop_node_server()
                print(f"load before ray CLI: {_load()}")
                t = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "porter", "zoo", "build", str(catalog), "--zoo",
                     str(tmp / f"zoo-cli-{round_}-{state}"), "--find-links", wheels, "--ray",
                     address, "--json"],
                    env={**env, "PORTER_CACHE": str(tmp / f"cache-cli-{round_}-{state}")},
                    capture_output=True, text=True)
                par = time.perf_counter() - t
                if proc.returncode != 0:
                    sys.exit(f"ray CLI build failed: {proc.stderr[-2000:]}")
                print(f"ray, `porter zoo build --ray ADDRESS` in a fresh process (a new job), "
                      f"{state} node server: {par:.1f} s   (load after {_load()})")
                print(f"ratio ray CLI/sequential: {par / seq:.2f}  (target <= 0.65)")
        stop_node_server()
        ray.shutdown()


if __name__ == "__main__":
    main()
