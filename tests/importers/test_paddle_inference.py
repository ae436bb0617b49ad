"""Paddle inference models read without Paddle equal what Paddle's own loader reads."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest

import porter
from porter.errors import FormatError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(paddle_models: Path) -> Path:
    return paddle_models


def _ref(models: Path, mode: str) -> dict:
    with open(models / mode / "inference.ref.pkl", "rb") as fh:  # our own fixture builder
        return pickle.load(fh)


@pytest.mark.parametrize("mode", ["legacy", "pir"])
def test_weights_bit_exact_against_paddle(models: Path, mode: str) -> None:
    src = porter.open(models / mode)
    ref = _ref(models, mode)["arrays"]
    assert src.format == "paddle-inference"
    assert sorted(src.tensors) == sorted(ref) and len(ref) == 11
    for name, want in ref.items():
        got = src.tensors[name].numpy()
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert got.tobytes() == want.tobytes(), name
    assert src.meta["param_order"] == sorted(ref)  # .pdiparams is in sorted-name order


def test_legacy_graph_matches_paddle_program(models: Path) -> None:
    src = porter.open(models / "legacy" / "inference.pdmodel")
    ops = _ref(models, "legacy")["ops"]
    nodes = sorted(src.graph.nodes(data=True), key=lambda n: n[1]["index"])
    assert [d["op_type"] for _, d in nodes] == [o["type"] for o in ops]
    for (_, d), o in zip(nodes, ops):
        assert d["slots"]["inputs"] == o["inputs"] and d["slots"]["outputs"] == o["outputs"]
    conv = next(d for _, d in nodes if d["op_type"] == "conv2d")
    assert conv["attrs"]["paddings"] == [1, 1] and conv["attrs"]["strides"] == [1, 1]
    assert src.meta["inputs"] == [{"name": "x", "shape": [-1, 3, 16, 16], "dtype": "float32"}]
    assert src.meta["outputs"][0]["name"] == "softmax_0.tmp_0"
    # Edges carry tensors: the conv feeds the bias add.
    assert any(e["tensor"] == "conv2d_0.tmp_0" for _, _, e in src.graph.edges(data=True))


def test_pir_graph_matches_paddle_program(models: Path) -> None:
    src = porter.open(models / "pir" / "inference.json")
    ops = _ref(models, "pir")["ops"]
    nodes = sorted(src.graph.nodes(data=True), key=lambda n: n[1]["index"])
    assert [d["op_type"] for _, d in nodes] == [o["type"] for o in ops]
    conv = next(d for _, d in nodes if d["op_type"] == "pd_op.conv2d")
    assert conv["inputs"] == ["x", "conv2d_0.w_0"] and conv["attrs"]["strides"] == [1, 1]
    assert src.meta["inputs"][0]["name"] == "x" and src.meta["outputs"][0]["shape"] == [-1, 3]


def test_sniffing_file_pairs_and_folders(models: Path) -> None:
    for p in ("legacy", "legacy/inference.pdmodel", "legacy/inference.pdiparams",
              "pir", "pir/inference.json"):
        assert porter.open(models / p).format == "paddle-inference", p


@pytest.mark.parametrize("mode, program", [("legacy", "inference.pdmodel"),
                                           ("pir", "inference.json")])
def test_jit_save_prefix_opens_the_program_beside_its_params(models: Path, mode: str,
                                                             program: str) -> None:
    """``paddle.jit.save(net, "dir/inference")`` names the model by that prefix, as
    ``paddle.jit.load`` does: it opens the program file, the same source as naming it."""
    by_prefix = porter.open(models / mode / "inference")
    assert by_prefix.path == models / mode / program
    assert by_prefix.format == "paddle-inference"
    assert sorted(by_prefix.tensors) == sorted(porter.open(models / mode / program).tensors)
    with pytest.raises(FormatError, match="no such file or directory"):
        porter.open(models / mode / "inferenc")


def test_corrupt_files_give_one_line_errors(models: Path, tmp_path: Path) -> None:
    work = tmp_path / "m"
    shutil.copytree(models / "legacy", work)
    params = (work / "inference.pdiparams").read_bytes()
    (work / "inference.pdiparams").write_bytes(params[:-10])
    with pytest.raises(FormatError, match=r"inference.pdiparams: truncated in data of"):
        porter.open(work)
    (work / "inference.pdiparams").write_bytes(params + b"\0" * 8)
    with pytest.raises(FormatError, match="trailing bytes"):
        porter.open(work)
    (work / "inference.pdiparams").write_bytes(params)
    program = (work / "inference.pdmodel").read_bytes()
    (work / "inference.pdmodel").write_bytes(program[: len(program) // 3])
    with pytest.raises(FormatError) as err:
        porter.open(work)
    assert "\n" not in str(err.value)
    pir = tmp_path / "p"
    shutil.copytree(models / "pir", pir)
    text = (pir / "inference.json").read_text()
    (pir / "inference.json").write_text(text[: len(text) // 2])
    with pytest.raises(FormatError, match="not a readable PIR program"):
        porter.open(pir / "inference.json")
