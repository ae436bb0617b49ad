"""npu_available on a machine without torch_npu: False, and nothing imported."""

from __future__ import annotations

import sys

import pytest
import torch

from porter.verification.npu import device, npu_available


def test_absent_npu_is_false_without_side_effects() -> None:
    had_npu_attr = hasattr(torch, "npu")
    assert npu_available() is False
    assert "torch_npu" not in sys.modules
    assert hasattr(torch, "npu") == had_npu_attr


def test_broken_torch_npu_import_is_false(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_import(name: str):
        calls.append(name)
        raise ImportError("libascendcl.so: cannot open shared object file")

    monkeypatch.setattr(device.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(device.importlib, "import_module", fake_import)
    assert device.npu_available() is False
    assert calls == ["torch_npu"]
