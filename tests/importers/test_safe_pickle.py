"""The allow-list unpickler: numpy and containers round-trip exactly; code never runs."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import porter
from porter.errors import FormatError, UnsafeSourceError
from porter.importers.safe_pickle import safe_loads


class _Call:
    """Pickles as a call of ``fn(*args)``: what a malicious .pdparams contains."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _touch_payload(marker: Path) -> bytes:
    return pickle.dumps({"conv.weight": np.ones(2, "float32"),
                         "evil": _Call(os.system, f"touch {marker}")}, protocol=2)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_round_trip_is_exact(protocol: int) -> None:
    rng = np.random.default_rng(0)
    obj = collections.OrderedDict(
        f32=rng.standard_normal((3, 4)).astype("float32"),
        f16=rng.standard_normal(5).astype("float16"),
        i64=rng.integers(-2**62, 2**62, 3, dtype="int64"),
        b=rng.integers(0, 2, 4).astype(bool),
        big_endian=np.arange(3, dtype=">f4"),
        fortran=np.asfortranarray(rng.standard_normal((2, 3))),
        tup=("linear_0.w_0", np.eye(2, dtype="float64")),
        scalar=np.float32(2.5), meta={"k": [1, 2.0, "s", b"raw", None, True]})
    data = pickle.dumps(obj, protocol=protocol)
    back, ref = safe_loads(data), pickle.loads(data)  # the reference is the stock unpickler
    assert list(back) == list(obj)
    for k in ("f32", "f16", "i64", "b", "big_endian", "fortran"):
        assert back[k].dtype == ref[k].dtype and back[k].tobytes() == ref[k].tobytes()
        assert np.array_equal(back[k], obj[k])
    assert back["tup"][0] == "linear_0.w_0" and np.array_equal(back["tup"][1], obj["tup"][1])
    assert back["scalar"] == np.float32(2.5) and back["meta"] == obj["meta"]


def test_os_system_is_refused_and_never_runs(tmp_path: Path) -> None:
    # The same payload really runs under plain pickle (in a child, on another marker) ...
    proof = tmp_path / "proof"
    code = "import pickle,sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=_touch_payload(proof), check=True)
    assert proof.exists()
    # ... and porter refuses it, naming the global, before anything runs.
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(_touch_payload(marker))
    with pytest.raises(UnsafeSourceError, match=r"posix\.system"):
        porter.open(evil)
    assert not marker.exists()


@pytest.mark.parametrize("fn,args,name", [
    (eval, ("__import__('os').getcwd()",), "builtins.eval"),
    (exec, ("x = 1",), "builtins.exec"),
    (getattr, ("abc", "upper"), "builtins.getattr"),
    (subprocess.Popen, (["true"],), "subprocess.Popen"),
    (__import__, ("os",), "builtins.__import__"),
    (collections.Counter, ("abc",), "collections.Counter"),
])
def test_other_globals_are_refused(fn, args, name: str) -> None:
    with pytest.raises(UnsafeSourceError, match=name.replace(".", r"\.")):
        safe_loads(pickle.dumps({"x": _Call(fn, *args)}, protocol=4))


def test_array_tricks_are_refused() -> None:
    with pytest.raises(UnsafeSourceError, match="object dtype"):
        safe_loads(pickle.dumps(np.array([1, "a"], dtype=object)))
    with pytest.raises(UnsafeSourceError, match="numpy.ma"):
        safe_loads(pickle.dumps(np.ma.masked_array([1.0, 2.0], mask=[0, 1])))
    # An allowed reconstructor asked to build something other than a plain ndarray.
    from numpy._core.multiarray import _reconstruct
    with pytest.raises(UnsafeSourceError, match="subclass"):
        safe_loads(pickle.dumps(_Call(_reconstruct, collections.OrderedDict, (0,), b"b")))
    import codecs
    with pytest.raises(UnsafeSourceError, match="_codecs.encode"):
        safe_loads(pickle.dumps(_Call(codecs.encode, "abc", "rot13")))


def test_persistent_ids_are_refused() -> None:
    class P(pickle.Pickler):
        def persistent_id(self, obj):
            return "storage/0" if isinstance(obj, np.ndarray) else None

    buf = io.BytesIO()
    P(buf, protocol=2).dump({"w": np.zeros(2)})
    with pytest.raises(UnsafeSourceError, match="persistent id 'storage/0'"):
        safe_loads(buf.getvalue())


def test_truncated_and_garbage_are_format_errors(tmp_path: Path) -> None:
    data = pickle.dumps({"w": np.arange(100, dtype="float32")}, protocol=4)
    with pytest.raises(FormatError, match="truncated or corrupt"):
        safe_loads(data[: len(data) // 2])
    bad = tmp_path / "bad.pdparams"
    bad.write_bytes(b"\x80\x04garbage")
    with pytest.raises(FormatError, match="bad.pdparams"):
        porter.open(bad)
