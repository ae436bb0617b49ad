"""Every ONNX backend node-suite case of the vision ops, against the case's expected outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from node_suite import vision_cases  # noqa: E402
from onnx_conformance import run_porter  # noqa: E402

CASES = vision_cases()


def test_selection_is_broad() -> None:
    assert len(CASES) > 600


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_node_case(case) -> None:
    assert run_porter(case) == "pass"
