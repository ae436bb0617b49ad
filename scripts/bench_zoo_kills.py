"""Kill publishers with SIGKILL at random points and count what they leave in the zoo.

    python scripts/bench_zoo_kills.py --backend local --kills 60
    python scripts/bench_zoo_kills.py --backend s3 --kills 60     # starts a loopback moto server

A child process publishes two small outputs alternately (each time with a fresh note file, so
a kill can leave an unreferenced blob), forever, and is killed after a random delay drawn from
[0, 3 x one warm publish's duration] (the child connects before it says it is ready), so kills
land in every step of a publish. After each kill every version of every entry is read and
re-hashed: one that cannot be read, or whose blobs are missing or altered, counts as corrupt or
half-visible. At the end ``gc`` (grace 0) must leave exactly the referenced blobs. Prints a JSON
summary; tests/zoo/test_backends.py runs the same loop with fewer kills.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # this checkout's porter, also when run as a script

CHILD = """
import os, sys
from pathlib import Path
from porter.zoo.publish import prepare_zoo, publish
a, b, zoo = sys.argv[1:4]
prepare_zoo(zoo)  # connected (for S3: a client session), so kills land inside publishes
print("ready", flush=True)
while True:
    for out in (a, b):  # a note that differs every time: a blob a kill can leave unreferenced
        Path(out, "notes.txt").write_bytes(os.urandom(64))
        publish(out, "m", zoo)
"""


def make_output(folder: Path, seed: int, kib: int = 256) -> str:
    """A minimal porter output (real safetensors weights + manifest); returns its digest."""
    import numpy as np
    from safetensors.numpy import save_file

    from porter.source import sha256_file

    folder.mkdir(parents=True)
    w = np.random.default_rng(seed).normal(size=(kib * 256,)).astype(np.float32)
    save_file({"w": w}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    digest = sha256_file(folder / "model.safetensors")
    (folder / "manifest.json").write_text(json.dumps({
        "porter": "test", "name": "m", "graph": {"class": "porter.graphs.modnet:MODNet"},
        "source": {"sha256": f"{seed:064d}"},
        "weights": {"file": "model.safetensors", "sha256": digest}}))
    return digest


def check_zoo(zoo: str | Path, digests: set[str]) -> dict[str, int]:
    """Counts of readable versions and of corrupt or half-visible ones in ``zoo``."""
    from porter.zoo.publish import list_entries, verify_all

    listed = list_entries(zoo, all_versions=True)
    broken = [e for e in listed if "error" in e]
    results = verify_all(zoo)
    bad = [r for r in results if not r["ok"] or r["sha256"] not in digests]
    latest = [e for e in listed if e.get("latest")]
    return {"versions": len(results), "corrupt": len(bad), "half_visible": len(broken),
            "latest_entries": len(latest)}


def debris(store: Any) -> dict[str, int]:
    """Where the zoo stands: m's newest version, the one latest names, and leftovers (blobs no
    version references, temporary files) that only gc removes."""
    from porter.zoo.layout import read_latest, resolve, versions_of

    referenced: set[str] = set()
    for name in store.list("versions"):
        for v in versions_of(store, name):
            referenced |= {i["sha256"] for i in resolve(store, f"{name}@{v}").manifest["files"]
                           .values()}
    left = 0
    for folder in ["blobs/sha256", "latest"] + [f"versions/{n}" for n in store.list("versions")]:
        for item in store.list(folder):
            left += item.startswith(".") or (folder == "blobs/sha256" and item not in referenced)
    known = versions_of(store, "m")
    latest = read_latest(store, "m")
    return {"newest": known[-1] if known else 0,
            "latest": int(latest["version"]) if latest else 0, "leftovers": left}


def kill_loop(zoo: str | Path, work: Path, kills: int, seed: int = 7,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``kills`` killed publishers against ``zoo``; returns the summary (see module doc)."""
    from porter.zoo.layout import blob_key
    from porter.zoo.load import zoo_root
    from porter.zoo.publish import gc, publish
    from porter.zoo.store import open_store

    digests = {make_output(work / "a", 0), make_output(work / "b", 1)}
    publish(work / "a", "warmup", zoo)
    t = time.perf_counter()
    publish(work / "b", "warmup", zoo)  # one warm publish's duration, to spread kills over it
    one = time.perf_counter() - t
    rng = random.Random(seed)
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    worst = {"corrupt": 0, "half_visible": 0}
    store = open_store(zoo_root(zoo))
    landed = {"before_any_version": 0, "after_a_version": 0, "left_latest_behind": 0,
              "left_leftovers": 0}
    before = debris(store)
    t0 = time.perf_counter()
    for _ in range(kills):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(work / "a"), str(work / "b"),
                                  str(zoo)], stdout=subprocess.PIPE, env=env, cwd=work)
        assert child.stdout.readline().strip() == b"ready", "publisher did not start"
        time.sleep(rng.uniform(0.0, 3 * one))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        seen = check_zoo(zoo, digests)
        for k in worst:
            worst[k] += seen[k]
        now = debris(store)
        landed["after_a_version" if now["newest"] > before["newest"] else "before_any_version"] += 1
        landed["left_latest_behind"] += now["newest"] > max(now["latest"], before["newest"])
        landed["left_leftovers"] += now["leftovers"] > before["leftovers"]
        before = now
    after = check_zoo(zoo, digests)
    cleared = gc(zoo, grace_s=0)
    referenced = set()
    from porter.zoo.layout import resolve, versions_of

    for name in ("m", "warmup"):
        for v in versions_of(store, name):
            referenced |= {i["sha256"] for i in resolve(store, f"{name}@{v}").manifest["files"]
                           .values()}
    left = set(store.list("blobs/sha256"))
    clean = check_zoo(zoo, digests)
    return {"kill_count": kills, "publish_s": round(one, 4), "loop_s": round(time.perf_counter() - t0, 1),
            "versions_published": after["versions"] - 2, "corrupt_seen": worst["corrupt"],
            "half_visible_seen": worst["half_visible"], "kills": landed,
            "gc_cleared": len(cleared),
            "blobs_left_equal_referenced": left == referenced
            and all(store.digest(blob_key(d)) == d for d in left),
            "after_gc": clean}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["local", "s3"], default="local")
    parser.add_argument("--kills", type=int, default=60)
    args = parser.parse_args()
    import socket
    import tempfile

    work = Path(tempfile.mkdtemp(prefix="porter-kills-"))
    env: dict[str, str] = {"PORTER_CACHE": str(work / "cache")}
    server = None
    if args.backend == "local":
        zoo: str | Path = work / "zoo"
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "zoo_s3_server.py"),
                                   str(port)], stderr=subprocess.DEVNULL)
        env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="testing",
                   AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        os.environ.update(env)
        import s3fs

        s3fs.S3FileSystem().mkdir("kills")
        zoo = "s3://kills/zoo"
    os.environ.update(env)
    try:
        summary = kill_loop(zoo, work, args.kills, env=env)
    finally:
        if server is not None:
            server.terminate()
            server.wait()
    print(json.dumps({"backend": args.backend, **summary}, indent=1))
    ok = summary["corrupt_seen"] == summary["half_visible_seen"] == 0 and \
        summary["blobs_left_equal_referenced"] and summary["after_gc"]["corrupt"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
