"""porter.perf: with keep_freed_memory, glibc serves activations from the heap and keeps them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = r"""
import ctypes, json, sys
import torch
from porter.perf import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
took = keep_freed_memory() if sys.argv[1] == "keep" else None
before = libc.mallinfo2().hblkhd
x = torch.empty(12 * 1024 * 1024)  # 48 MiB, above any mmap threshold glibc accepts
mapped = libc.mallinfo2().hblkhd - before
del x
print(json.dumps({"took": took, "mapped": mapped, "kept_free": libc.mallinfo2().fordblks}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-1000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_keep_freed_memory_serves_large_blocks_from_the_heap():
    default, kept = _probe("default"), _probe("keep")
    assert default["mapped"] >= 48 * 1024 * 1024      # glibc's default: a fresh mapping
    assert kept["took"] is True and kept["mapped"] == 0  # now from the heap …
    assert kept["kept_free"] >= 48 * 1024 * 1024       # … and kept there once freed
