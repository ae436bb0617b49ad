"""``.pdparams``/``.pdopt`` read by porter equal what ``paddle.load`` reads, bit for bit."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

import porter
from porter.errors import FormatError

ROOT = Path(__file__).resolve().parents[2]
FILES = ["net.pdparams", "net_p2.pdparams", "dtypes.pdparams", "nested.pdparams", "net.pdopt"]


@pytest.fixture(scope="module")
def fixtures(paddle_models: Path) -> Path:
    assert (paddle_models / FILES[0]).is_file(), sorted(p.name for p in paddle_models.iterdir())
    return paddle_models


def _reference(path: Path) -> dict:
    with open(str(path) + ".ref.pkl", "rb") as fh:  # written by our own fixture builder
        return pickle.load(fh)


@pytest.mark.parametrize("name", FILES)
def test_bit_exact_against_paddle_load(fixtures: Path, name: str) -> None:
    src = porter.open(fixtures / name)
    ref = _reference(fixtures / name)["arrays"]
    assert src.format == "paddle-params"
    assert sorted(src.tensors) == sorted(ref) and len(ref) > 0
    for key, want in ref.items():
        got = src.tensors[key].numpy()
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape and src.tensors[key].shape == want.shape, key
        assert got.tobytes() == want.tobytes(), key


def test_dtypes_cover_the_usual_suspects(fixtures: Path) -> None:
    src = porter.open(fixtures / "dtypes.pdparams")
    kinds = {k: str(t.dtype) for k, t in src.tensors.items()}
    assert kinds == {"f32": "float32", "f16": "float16", "f64": "float64", "i64": "int64",
                     "i32": "int32", "u8": "uint8", "b": "bool", "scalar": "float32"}
    assert src.tensors["scalar"].shape == ()


def test_structured_names_are_meta_not_tensors(fixtures: Path) -> None:
    src = porter.open(fixtures / "net.pdparams")
    assert "StructuredToParameterName@@" not in src.tensors
    assert src.meta["structured_names"]["fc.weight"] == "linear_0.w_0"
    assert src.meta["structured_names"]["bn._mean"] == "batch_norm2d_0.w_1"
    assert src.tensors["fc.weight"].shape == (4, 3)  # Paddle Linear: [in, out]


def test_tuple_form_and_nested_dicts(fixtures: Path) -> None:
    src = porter.open(fixtures / "nested.pdparams")
    flat = porter.open(fixtures / "net.pdparams")
    assert sorted(src.tensors) == sorted(f"model/{k}" for k in flat.tensors)
    assert src.meta["param_names"]["model/conv.weight"] == "conv2d_0.w_0"
    assert src.meta["extra"] == {"epoch": 7, "note": "nested"}
    for k, t in flat.tensors.items():
        assert src.tensors[f"model/{k}"].numpy().tobytes() == t.numpy().tobytes()


def test_tensors_are_read_only(fixtures: Path) -> None:
    arr = porter.open(fixtures / "net.pdparams").tensors["conv.weight"].numpy()
    with pytest.raises(ValueError):
        arr[...] = 0


def test_truncated_and_wrong_files(fixtures: Path, tmp_path: Path) -> None:
    data = (fixtures / "net.pdparams").read_bytes()
    cut = tmp_path / "cut.pdparams"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(FormatError, match="cut.pdparams.*truncated or corrupt"):
        porter.open(cut)
    lst = tmp_path / "list.pdparams"
    lst.write_bytes(pickle.dumps([np.zeros(2)], protocol=2))
    with pytest.raises(FormatError, match="not a Paddle state dict"):
        porter.open(lst)
    empty = tmp_path / "empty.pdparams"
    empty.write_bytes(b"")
    with pytest.raises(FormatError):
        porter.open(empty, format="paddle-params")
