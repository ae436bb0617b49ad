"""The released BEN2 configuration end to end, once: random-weight ``BEN2_Base.pth``
(``{"model_state_dict": …}``) and the packaged ``model.safetensors`` (written by upstream's
``PyTorchModelHubMixin.save_pretrained``), both built here from upstream's own modules with a
fixed seed; `porter inspect` and `porter convert --verify npu` against the upstream network at
1024² (one forward of each side takes 80-90 s on two cores)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "graphs"))
import ben2_oracle as oracle  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ben2_files(tmp_path_factory):
    oracle.require_upstream()
    pytest.importorskip("huggingface_hub", reason="the packaged upstream saves with it")
    from porter.verification.runtimes.torch_upstream import import_upstream

    out = tmp_path_factory.mktemp("ben2_full")
    packaged = import_upstream(f"{oracle.PACKAGED_FILE}:BEN_Base")()
    state = oracle.seeded_state(packaged, 2025)
    packaged.load_state_dict(state, strict=True)
    torch.save({"model_state_dict": state}, out / "BEN2_Base.pth")
    packaged.save_pretrained(out / "hub")
    return out / "BEN2_Base.pth", out / "hub" / "model.safetensors"


def test_inspect_both(ben2_files, capsys):
    from porter.cli.main import main

    for path in ben2_files:
        assert main(["inspect", str(path), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["tensor_count"] == 535
    assert info["format"] == "safetensors" and info["kinds"] == {"parameter": 535}


def test_convert_pth_verify_npu_full_size(ben2_files, tmp_path):
    from porter.pipeline import convert

    pth, st = ben2_files
    r = convert(pth, verify="npu", out=tmp_path / "pth", upstream=f"{oracle.UPSTREAM_FILE}:BEN_Base")
    m = r.manifest
    assert m["graph"]["port"] == "ben2"  # --graph auto recognised it
    assert m["mapping"]["counts"]["source_tensors"] == 535 == m["mapping"]["counts"]["mapped"]
    case = m["parity"]["cases"][0]
    assert case["shapes"] == {"x": [1, 3, 1024, 1024]}
    assert m["parity"]["passed"] and m["parity"]["worst_max_abs"] <= 1e-4
    assert m["npu"]["missing"] == [] and m["npu"]["passed"]
    seed = m["npu"]["fp16"]["seed_criteria"]["outputs"]["alpha"]
    print(f"\nBEN2 full: max|Δ| {m['parity']['worst_max_abs']:.3e}; fp16 MAE {seed['mae']:.3e} "
          f"cosine {seed['cosine']:.6f} rel err {100 * seed['rel_err']:.3f} %")
    # the packaged safetensors maps to the very same weights
    r2 = convert(st, graph="ben2", verify="none", out=tmp_path / "st")
    assert r2.manifest["weights"]["sha256"] == m["weights"]["sha256"]
