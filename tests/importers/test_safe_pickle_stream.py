"""The streamed safe unpickler reads what the in-memory one reads, with the file's digest."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest

from porter.errors import FormatError
from porter.importers.safe_pickle import safe_load_file, safe_loads


@pytest.mark.parametrize("protocol", [2, 4])
def test_stream_matches_in_memory_load(tmp_path, protocol) -> None:
    rng = np.random.default_rng(0)
    state = {"conv.weight": rng.standard_normal((8, 3, 3, 3)).astype(np.float32),
             "fc.bias": np.arange(5, dtype=np.int64), "scalar": np.float32(2.5),
             "nested": {"big": rng.standard_normal(300_000).astype(np.float32)}}
    path = tmp_path / "m.pdparams"
    path.write_bytes(pickle.dumps(state, protocol=protocol) + b"trailing")
    obj, digest = safe_load_file(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    ref = safe_loads(path.read_bytes())
    for key in ("conv.weight", "fc.bias"):
        assert obj[key].dtype == ref[key].dtype and np.array_equal(obj[key], state[key])
    assert np.array_equal(obj["nested"]["big"], state["nested"]["big"])
    assert float(obj["scalar"]) == 2.5


def test_truncated_stream_is_one_format_error(tmp_path) -> None:
    path = tmp_path / "t.pdparams"
    path.write_bytes(pickle.dumps({"w": np.zeros(1000, np.float32)}, protocol=4)[:-200])
    with pytest.raises(FormatError, match="t.pdparams"):
        safe_load_file(path)
