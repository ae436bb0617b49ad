"""A file swapped after porter's safe read never reaches a full unpickler (issue 10, case 4).

The BGMv2 Paddle reference used to ``paddle.load`` the ``.pdparams`` path again: a file replaced
after porter's import ran its payload, parity still passed, and the manifest recorded the
swapped file's digest. The reference now gets the arrays porter read, and the digest is of the
bytes read.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import pytest

import porter
from porter.graphs import get_port
from porter.verification.parity import Tolerance, run_parity
from porter.verification.runtimes.torch_ import TorchRunner
from tests.security.conftest import ROOT, run_capped

pytestmark = pytest.mark.slow  # Paddle writes a ResNet-50 BGMv2 in a child

_BUILD = ("import sys; sys.path.insert(0, sys.argv[2]); from scripts.bgmv2_paddle_ref import "
          "save_random; save_random(sys.argv[1], 'MattingBase', {'backbone': 'resnet50'}, 0)")


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return os.system, (self.cmd,)


def test_swapped_pdparams_never_runs_and_digest_is_of_what_was_read(tmp_path: Path) -> None:
    path = tmp_path / "bgmv2.pdparams"
    proc = run_capped(["-c", _BUILD, str(path), str(ROOT)], tmp_path, timeout=600, cap=None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    read_digest = hashlib.sha256(path.read_bytes()).hexdigest()
    source = porter.open(path)
    port = get_port("bgmv2")
    ported = port.port(source)
    canary = tmp_path / "CANARY"
    # the swap: same path, now a pickle that runs a command under any full unpickler
    path.write_bytes(pickle.dumps({"x": _System(f"touch {canary}")}, protocol=2))
    assert source.sha256() == read_digest  # the manifest's digest is of the bytes porter read
    cases = port.cases(source, ported)[:1]
    with port.reference(source, ported) as reference:
        report = run_parity(reference, TorchRunner(ported.module, ported.input_names, ported.output_names),
                            cases, tolerance=Tolerance(max_abs=1e-3), reference_name="paddle",
                            candidate_name="torch")
    assert not canary.exists()
    assert report.passed, report
