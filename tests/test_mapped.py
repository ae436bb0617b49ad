"""Private maps of source files and letting their pages go (porter.mapped): a transposed copy
of a mapped kernel holds the copy and one block of the source, not the source too; a page
written through the map is never lost; hashes read views in C order without a full copy."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from porter import mapped

ROOT = Path(__file__).resolve().parents[1]


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _file(path: Path, n: int) -> np.ndarray:
    data = np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8)
    data.tofile(path)
    return data


def test_release_drops_clean_pages_and_keeps_written_ones(tmp_path) -> None:
    want = _file(tmp_path / "w.bin", 32 << 20)
    with open(tmp_path / "w.bin", "rb") as fh:
        m = mapped.map_private(fh, want.size)
    assert mapped.is_mapped(m[100:200]) and not mapped.is_mapped(np.zeros(10))
    before = _rss()
    assert int(m[::4096].astype(np.int64).sum()) == int(want[::4096].astype(np.int64).sum())
    touched = _rss()
    assert touched - before > 28 << 20  # every page resident
    m[5 * 4096] = want[5 * 4096] ^ 0xFF  # a page written through the map (copy-on-write)
    mapped.release(m)
    assert _rss() - before < 2 << 20  # all clean pages gone
    assert m[5 * 4096] == want[5 * 4096] ^ 0xFF  # the written page kept
    m[5 * 4096] = want[5 * 4096]
    assert np.array_equal(m, want)  # the rest read back from the file
    assert np.array_equal(np.fromfile(tmp_path / "w.bin", np.uint8), want)  # file unchanged


_COPY = r"""
import json, sys
import numpy as np
from porter import mapped
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
fh = open(sys.argv[1], "rb")
m = mapped.map_private(fh, 64 << 20).view(np.float32).reshape(4096, 4096)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = status("VmRSS")
out = mapped.contiguous_copy(m.T)  # a dense kernel [in, out] -> [out, in]
grew = status("VmHWM") - base
want = np.ascontiguousarray(np.fromfile(sys.argv[1], np.float32).reshape(4096, 4096).T)
print(json.dumps({"grew": grew, "contiguous": out.flags.c_contiguous,
                  "equal": out.tobytes() == want.tobytes()}))  # bytes: random bits hold NaNs
"""


def test_transposed_copy_of_a_mapped_kernel_holds_one_block_of_it(tmp_path) -> None:
    _file(tmp_path / "k.bin", 64 << 20)
    proc = subprocess.run([sys.executable, "-c", _COPY, str(tmp_path / "k.bin")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads(proc.stdout)
    assert r["equal"] and r["contiguous"]
    # the copy (64 MiB) and a few blocks of source pages; read column-wise, the whole source
    # would be mapped at once (128 MiB)
    assert r["grew"] <= (64 << 20) + 4 * mapped.BLOCK_BYTES + (4 << 20), r["grew"] / 2**20


def test_update_hash_reads_views_in_c_order(tmp_path) -> None:
    want = _file(tmp_path / "h.bin", 3 * 5 * 64 * 48 * 4)
    with open(tmp_path / "h.bin", "rb") as fh:
        m = mapped.map_private(fh, want.size).view(np.float32).reshape(3, 5, 64, 48)
    for view in (m, m.transpose(3, 2, 0, 1), m.reshape(15, 3072).T, m[:, ::2]):
        expect = hashlib.sha256(np.ascontiguousarray(view).tobytes()).hexdigest()
        assert mapped.sha256_hex(view) == expect
    assert mapped.sha256_hex(np.float32(2.5)) == hashlib.sha256(
        np.float32(2.5).tobytes()).hexdigest()
