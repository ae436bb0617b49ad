"""Issue 10, "Why" 8 and 10: a killed publish leaves no corrupt, phantom or leftover entry;
concurrent publishes are serialised; hard links and symbolic links are refused."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from porter.errors import IntegrityError
from porter.source import sha256_file
from porter.zoo.publish import gc, list_entries, publish, verify_entry

ROOT = Path(__file__).resolve().parents[2]


def _output(folder: Path, seed: int, mib: int = 4) -> str:
    """A minimal porter output (real safetensors weights + manifest); returns its digest."""
    folder.mkdir(parents=True)
    w = np.random.default_rng(seed).normal(size=(mib * 262144,)).astype(np.float32)
    save_file({"w": w}, str(folder / "model.safetensors"), metadata={"format": "pt"})
    digest = sha256_file(folder / "model.safetensors")
    (folder / "manifest.json").write_text(json.dumps({
        "porter": "test", "name": "m", "graph": {"class": "porter.graphs.modnet:MODNet"},
        "weights": {"file": "model.safetensors", "sha256": digest}}))
    return digest


def _hidden(zoo: Path) -> list[str]:
    return sorted(p.name for p in zoo.iterdir() if p.name.startswith("."))


CHILD = """
import sys
from porter.zoo.publish import publish
a, b, zoo = sys.argv[1:4]
print("ready", flush=True)
while True:
    publish(a, "m", zoo)
    publish(b, "m", zoo)
"""


@pytest.mark.slow
def test_100_kill_9_during_publish_leave_no_corrupt_phantom_or_leftover_entry(tmp_path):
    digests = {_output(tmp_path / "a", 0), _output(tmp_path / "b", 1)}
    zoo = tmp_path / "zoo"
    rng = random.Random(7)
    debris_seen = 0
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for _ in range(100):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "a"),
                                  str(tmp_path / "b"), str(zoo)], stdout=subprocess.PIPE,
                                 env=env, cwd=tmp_path)
        assert child.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.06))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        entries = list_entries(zoo)
        assert [e["name"] for e in entries] in ([], ["m"])  # nothing half-made is listed
        for e in entries:
            assert verify_entry(e["name"], zoo)["sha256"] in digests  # nothing corrupt
            assert sorted(p.name for p in (zoo / "m").iterdir()) == \
                ["manifest.json", "model.safetensors"]
        debris_seen += bool(zoo.exists() and _hidden(zoo))
    assert [e["name"] for e in list_entries(zoo)] == ["m"]
    publish(tmp_path / "a", "m", zoo)  # the next publish clears what the killed ones left
    assert _hidden(zoo) == [] and verify_entry("m", zoo)["ok"]
    print(f"kills that left hidden debris before the next publish: {debris_seen}/100")


def test_gc_restores_an_entry_caught_between_renames_and_clears_staging(tmp_path):
    _output(tmp_path / "a", 0, mib=1)
    zoo = tmp_path / "zoo"
    publish(tmp_path / "a", "m", zoo)
    (zoo / "m").rename(zoo / ".m.porter-old-123")  # a writer killed between its two renames
    (zoo / ".m.porter-stage-xyz").mkdir()
    (zoo / ".m.porter-stage-xyz" / "manifest.json").write_text("{}")  # phantom candidate
    assert list_entries(zoo) == []
    assert sorted(gc(zoo)) == [".m.porter-old-123", ".m.porter-stage-xyz"]
    assert _hidden(zoo) == [] and verify_entry("m", zoo)["ok"]


def test_concurrent_publishes_are_serialised(tmp_path):
    digests = {_output(tmp_path / "a", 0, mib=8), _output(tmp_path / "b", 1, mib=8)}
    zoo = tmp_path / "zoo"
    code = "import sys; from porter.zoo.publish import publish\n" \
           "for _ in range(3): publish(sys.argv[1], 'm', sys.argv[2])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / src), str(zoo)],
                              env=env, stderr=subprocess.PIPE) for src in ("a", "b", "a")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()[-2000:]
    assert verify_entry("m", zoo)["sha256"] in digests and _hidden(zoo) == []


def test_hard_linked_weights_are_refused(tmp_path):
    from porter.zoo.load import load_output

    _output(tmp_path / "a", 0, mib=1)
    os.link(tmp_path / "a" / "model.safetensors", tmp_path / "elsewhere.safetensors")
    with pytest.raises(IntegrityError, match="hard links"):
        publish(tmp_path / "a", "m", tmp_path / "zoo")
    with pytest.raises(IntegrityError, match="hard links"):
        load_output(tmp_path / "a")
    assert not (tmp_path / "zoo" / "m").exists()


def test_symlinked_weights_are_refused(tmp_path):
    _output(tmp_path / "a", 0, mib=1)
    real = tmp_path / "a" / "model.safetensors"
    real.rename(tmp_path / "real.safetensors")
    real.symlink_to(tmp_path / "real.safetensors")
    with pytest.raises(IntegrityError, match="not a regular file"):
        publish(tmp_path / "a", "m", tmp_path / "zoo")
