#!/usr/bin/env python
"""Fuzz porter's importers with mutated model files and classify what happens.

    python scripts/fuzz_importers.py --per-format 2000 --seed 1          # every format
    python scripts/fuzz_importers.py --formats onnx,paddle-params -n 100
    python scripts/fuzz_importers.py --one FILE                          # one input, in-process

Seeds are built on the fly (ONNX with onnx.helper, Paddle params with pickle, safetensors /
PyTorch checkpoints when those importers are registered; TF1 and Paddle programs by the fixture
builders in scripts/, each in its own child) plus every real file under ``../shared/models``
that an importer claims. Each input is a seed with 1-4 byte mutations (bit flips, interesting
integers, deleted / inserted / duplicated / spliced chunks, truncation), written into a scratch
copy of the seed's folder. It is run as ``porter.open`` plus reading every tensor, in a forked
child with RLIMIT_AS set 2 GiB above the fuzzer's own size and a wall-clock timeout, and sorted:

- ``ok``: opened and every tensor read;      ``porter``: a PorterError (the wanted refusal);
- ``foreign``: any other exception (a bug);  ``memory``: a MemoryError anywhere in the chain;
- ``crash``: the child died on a signal;     ``hang``: it ran past the timeout.

Exit status 1 when any input is foreign, memory, crash or hang; ``--keep DIR`` saves those inputs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import random
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_MODELS = ROOT.parent / "shared" / "models"
CAP = 2 << 30
BAD = ("foreign", "memory", "crash", "hang")
_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 32,
                10 ** 9, 10 ** 12, (1 << 63) - 1, (1 << 64) - 1]


# ------------------------------------------------------------------------------- one input

def _has_memory_error(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 20:
        if isinstance(exc, MemoryError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def run_one(path: Path) -> dict:
    """Open ``path`` with porter and read every tensor; the outcome as a dict."""
    import porter
    from porter.errors import PorterError

    try:
        src = porter.open(path)
        nbytes = 0
        for ref in src.tensors.values():
            nbytes += int(ref.numpy().nbytes)
        return {"outcome": "ok", "format": src.format, "tensors": len(src.tensors),
                "bytes": nbytes}
    except PorterError as exc:
        kind = "memory" if _has_memory_error(exc) else "porter"
        res = {"outcome": kind, "error": f"{type(exc).__name__}: {exc}"[:300]}
        cause = exc.__cause__
        if cause is not None and not isinstance(cause, PorterError):
            res["wrapped"] = type(cause).__name__  # a foreign error turned into a FormatError
            tb = traceback.extract_tb(cause.__traceback__)
            if tb:
                res["where"] = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}"
        return res
    except BaseException as exc:  # noqa: BLE001 - classifying is the point
        kind = "memory" if _has_memory_error(exc) else "foreign"
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?"
        return {"outcome": kind, "error": f"{type(exc).__name__}: {str(exc)[:200]}",
                "where": where}


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def run_forked(path: Path, timeout: float, cap: int = CAP) -> dict:
    """:func:`run_one` in a forked child with RLIMIT_AS (``cap`` above our size) and a timeout."""
    limit = _vm_size() + cap
    rfd, wfd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(rfd)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            sys.stderr = io.StringIO()  # library chatter must not flood the fuzzer's output
            out = json.dumps(run_one(path)).encode()
            os.write(wfd, out)
        finally:
            os._exit(0)
    os.close(wfd)
    chunks: list[bytes] = []
    deadline = t0 + timeout
    hung = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            hung = True
            break
        ready, _, _ = select.select([rfd], [], [], left)
        if ready:
            data = os.read(rfd, 1 << 16)
            if not data:
                break
            chunks.append(data)
    if hung:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(rfd)
    seconds = round(time.monotonic() - t0, 3)
    if hung:
        return {"outcome": "hang", "seconds": seconds}
    if os.WIFSIGNALED(status):
        return {"outcome": "crash", "signal": signal.Signals(os.WTERMSIG(status)).name,
                "seconds": seconds}
    try:
        res = json.loads(b"".join(chunks))
    except ValueError:
        res = {"outcome": "crash", "error": f"child exit {os.WEXITSTATUS(status)}, no result"}
    res["seconds"] = seconds
    return res


# ----------------------------------------------------------------------------------- seeds

def _onnx_seeds(out: Path) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype("float32"), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype("float32"), "b")
    c = helper.make_node("Constant", [], ["scale"], value=numpy_helper.from_array(
        rng.standard_normal((1, 4, 1, 1)).astype("float32"), "scale_t"))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]), c,
             helper.make_node("Mul", ["y", "scale"], ["z"]),
             helper.make_node("Relu", ["z"], ["out"])]
    graph = helper.make_graph(
        nodes, "seed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    (out / "inline").mkdir()
    onnx.save(model, str(out / "inline" / "model.onnx"))
    (out / "external").mkdir()
    onnx.save(model, str(out / "external" / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)


def _paddle_params_seeds(out: Path) -> None:
    import collections

    import numpy as np

    rng = np.random.default_rng(0)
    state = collections.OrderedDict(
        [("conv.weight", rng.standard_normal((4, 3, 3, 3)).astype("float32")),
         ("conv.bias", rng.standard_normal(4).astype("float32")),
         ("bn._mean", np.zeros(4, "float32")), ("step", np.array([3], "int64")),
         ("StructuredToParameterName@@", {"conv.weight": "conv2d_0.w_0"})])
    for proto in (2, 4):
        (out / f"p{proto}").mkdir()
        with open(out / f"p{proto}" / "model.pdparams", "wb") as fh:
            pickle.dump(state, fh, protocol=proto)


def _safetensors_seeds(out: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    (out / "st").mkdir()
    rng = np.random.default_rng(0)
    save_file({"a.weight": rng.standard_normal((4, 3)).astype("float32"),
               "a.bias": np.arange(4, dtype="int64")}, str(out / "st" / "model.safetensors"))


def _pytorch_seeds(out: Path) -> None:
    code = ("import sys, torch; torch.manual_seed(0); "
            "torch.save({'a.weight': torch.randn(4, 3), 'a.bias': torch.arange(4)}, sys.argv[1]);"
            "torch.save({'state_dict': {'b.w': torch.randn(2, 2).half()}}, sys.argv[2])")
    (out / "pt").mkdir()
    subprocess.run([sys.executable, "-c", code, str(out / "pt" / "model.pt"),
                    str(out / "pt" / "nested.pth")], check=True, timeout=120)


def _script_seeds(script: str, out: Path, *args: str) -> None:
    out.mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), str(out), *args],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        print(f"seed builder {script} failed: {proc.stderr.strip()[-300:]}", file=sys.stderr)


def build_seeds(out: Path, formats: set[str] | None) -> None:
    """Write the on-the-fly seeds under ``out``, one sub-folder per builder."""
    from porter.importers import IMPORTERS, _load_registry

    _load_registry()

    def want(*names: str) -> bool:
        return formats is None or any(n in formats for n in names)

    builders = [(("onnx",), _onnx_seeds), (("paddle-params",), _paddle_params_seeds)]
    # importers other helpers add (names as they register them): seeds whatever they are called
    safetensors = tuple(n for n in IMPORTERS if "safetensors" in n)
    pytorch = tuple(n for n in IMPORTERS if "torch" in n)
    if safetensors:
        builders.append((safetensors, _safetensors_seeds))
    if pytorch:
        builders.append((pytorch, _pytorch_seeds))
    for names, fn in builders:
        if want(*names):
            (out / fn.__name__).mkdir()
            fn(out / fn.__name__)
    if want("tf1-checkpoint", "tf1-metagraph", "tf1-frozen"):
        _script_seeds("build_tf1_fixtures.py", out / "tf1")
    if want("paddle-inference"):
        _script_seeds("build_paddle_fixtures.py", out / "paddle")


def find_seeds(dirs: list[Path], max_bytes: int = 40 << 20) -> dict[str, list[Path]]:
    """format -> the paths (files, checkpoint prefixes) under ``dirs`` an importer claims."""
    from porter.importers import sniff

    found: dict[str, list[Path]] = {}
    for d in dirs:
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if not p.is_file() or p.stat().st_size > max_bytes or p.suffix in (".pkl", ".info"):
                continue
            cands = [Path(str(p)[:-len(".index")])] if p.suffix == ".index" else [p]
            for c in cands:
                fmt = sniff(c)
                if fmt and c not in found.setdefault(fmt, []):
                    found[fmt].append(c)
    return {k: v for k, v in found.items() if v}


def _members(seed: Path) -> list[Path]:
    """The files that make up ``seed``: for a prefix or a stem, its siblings sharing it."""
    folder = seed.parent
    stem = seed.name if not seed.is_file() else seed.name.split(".")[0]
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.startswith(stem)) or [seed]


# -------------------------------------------------------------------------------- mutation

def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-4 random byte-level edits of ``data``."""
    buf = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 1, 2, 2, 3, 4))):
        n = len(buf)
        op = rng.randrange(8)
        pos = rng.randrange(n) if n else 0
        if op == 0 and n:  # flip bits
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            buf[pos] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 2 and n > 8:  # an interesting integer, little-endian or as a varint
            v = rng.choice(_INTERESTING)
            if rng.random() < 0.5:
                enc = (v & ((1 << 64) - 1)).to_bytes(8, "little")[:rng.choice((1, 2, 4, 8))]
            else:
                enc = bytearray()
                while True:
                    enc.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
                    v >>= 7
                    if not v:
                        break
            buf[pos:pos + len(enc)] = enc
        elif op == 3 and n:
            del buf[pos:pos + rng.randint(1, max(1, min(64, n // 4)))]
        elif op == 4:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 5 and n:
            chunk = buf[pos:pos + rng.randint(1, 64)]
            buf[pos:pos] = chunk * rng.randint(1, 4)
        elif op == 6 and n > 1:
            src = rng.randrange(n)
            chunk = buf[src:src + rng.randint(1, 32)]
            buf[pos:pos + len(chunk)] = chunk
        elif op == 7 and n:
            del buf[rng.randrange(n):]
    return bytes(buf)


def make_input(seed: Path, scratch: Path, rng: random.Random) -> Path:
    """Copy ``seed``'s files into ``scratch`` with one of them mutated; the path to open."""
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    members = _members(seed)
    victim = seed if seed.is_file() and rng.random() < 0.6 else rng.choice(members)
    for m in members:
        data = m.read_bytes()
        (scratch / m.name).write_bytes(mutate(data, rng) if m == victim else data)
    return scratch / seed.name


# ------------------------------------------------------------------------------------ main

def fuzz(formats: list[str] | None, per_format: int, seed: int, timeout: float,
         keep: Path | None, extra_dirs: list[Path], quiet: bool = False,
         build: bool = True) -> dict:
    """Run the campaign; returns ``{format: {"counts": ..., "examples": [...]}}``."""
    from porter.importers import IMPORTERS, _load_registry

    _load_registry()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="porter-fuzz-") as tmp:
        seeds_dir = Path(tmp) / "seeds"
        seeds_dir.mkdir()
        if build:
            build_seeds(seeds_dir, set(formats) if formats else None)
        seeds = find_seeds([seeds_dir, SHARED_MODELS, *extra_dirs])
        names = formats or sorted(IMPORTERS)
        if not quiet:
            print(f"importers: {', '.join(sorted(IMPORTERS))}; seeds per format: "
                  + ", ".join(f"{k} {len(v)}" for k, v in sorted(seeds.items())), flush=True)
        for fmt in names:
            pool = seeds.get(fmt, [])
            if not pool:
                results[fmt] = {"counts": {}, "seeds": 0, "note": "no seed could be built"}
                if not quiet:
                    print(f"{fmt:18s} no seed could be built or found", flush=True)
                continue
            rng = random.Random(f"{seed}:{fmt}")
            counts: dict[str, int] = {}
            wrapped: dict[str, int] = {}
            examples: list[dict] = []
            t0 = time.monotonic()
            for i in range(per_format):
                s = rng.choice(pool)
                target = make_input(s, Path(tmp) / "case", rng)
                res = run_forked(target, timeout)
                if not quiet and (i + 1) % 250 == 0:
                    print(f"  {fmt}: {i + 1}/{per_format} {counts}", flush=True)
                counts[res["outcome"]] = counts.get(res["outcome"], 0) + 1
                if "wrapped" in res:
                    key = f"{res['wrapped']}@{res.get('where', '?')}"
                    wrapped[key] = wrapped.get(key, 0) + 1
                if res["outcome"] in BAD:
                    res.update(input=i, seed_file=str(s))
                    examples.append(res)
                    if keep:
                        dest = keep / fmt / f"{i:06d}"
                        shutil.copytree(target.parent, dest, dirs_exist_ok=True)
                        res["kept"] = str(dest)
            results[fmt] = {"counts": counts, "seeds": len(pool), "wrapped": wrapped,
                            "seconds": round(time.monotonic() - t0, 1), "examples": examples[:20]}
            if not quiet:
                print(f"{fmt:18s} {per_format:6d} inputs, {len(pool)} seeds: "
                      + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                      + f"  ({results[fmt]['seconds']} s)"
                      + (f"; porter errors wrapped at the importer boundary: {wrapped}"
                         if wrapped else ""), flush=True)
                for ex in examples[:5]:
                    print(f"    {ex}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--one", type=Path, help="run a single input in this process and exit "
                    "0 ok / 2 porter error / 3 anything else")
    ap.add_argument("--formats", help="comma-separated importer names (default: all registered)")
    ap.add_argument("-n", "--per-format", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per input")
    ap.add_argument("--keep", type=Path, help="save bad inputs under this folder")
    ap.add_argument("--seeds", type=Path, action="append", default=[],
                    help="extra folder of seed files")
    ap.add_argument("--json", type=Path, help="write the results as JSON here")
    ap.add_argument("--build-seeds", type=Path, help="only write the on-the-fly seeds into this "
                    "folder (reuse them with --seeds DIR --no-build)")
    ap.add_argument("--no-build", action="store_true", help="use only --seeds folders and "
                    "../shared/models, build no seeds")
    args = ap.parse_args(argv)
    if args.one:
        res = run_one(args.one)
        if res["outcome"] == "ok":
            print(json.dumps(res))
            return 0
        if res["outcome"] == "porter":
            print(f"porter: error: {res['error'].split(': ', 1)[1]}", file=sys.stderr)
            return 2
        print(json.dumps(res), file=sys.stderr)
        return 3
    formats = args.formats.split(",") if args.formats else None
    if args.build_seeds:
        args.build_seeds.mkdir(parents=True, exist_ok=True)
        build_seeds(args.build_seeds, set(formats) if formats else None)
        return 0
    results = fuzz(formats, args.per_format, args.seed, args.timeout, args.keep, args.seeds,
                   build=not args.no_build)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    bad = sum(r["counts"].get(k, 0) for r in results.values() for k in BAD)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
