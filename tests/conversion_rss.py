"""What the streaming tests share: a conversion's RSS growth, measured in a fresh process.

A tiny model is converted first (every import and one-time allocation done), the peak
(``VmHWM``) is reset, then the big model is converted with ``--verify none``; the result is
the RSS before, the peak during, and the largest child process's peak before and after (TF,
tf2onnx, paddle2onnx children).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, resource, sys
import numpy, torch, onnx
import porter, porter.converters.ops, porter.generic
from porter.pipeline import convert
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
def children():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
convert(sys.argv[3], verify="none", out=sys.argv[4])  # a tiny model first: every import done
warm_children = children()
with open("/proc/self/clear_refs", "w") as fh:  # 5: reset the peak (VmHWM) to the current RSS
    fh.write("5")
base = status("VmRSS")
convert(sys.argv[1], verify="none", out=sys.argv[2])
print(json.dumps({"base": base, "peak": status("VmHWM"), "warm_children": warm_children,
                  "children": children()}))
"""


def conversion_rss(big: str | Path, out: Path, tiny: str | Path, tiny_out: Path,
                   timeout: float = 900) -> dict[str, int]:
    """Bytes: ``base`` RSS, ``peak`` RSS while converting ``big``, and the children's largest
    peak after the warm-up (``warm_children``) and after the big conversion (``children``)."""
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(big), str(out), str(tiny),
                           str(tiny_out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
