"""The TF / Paddle reference children and the converter tools run confined (issue 10, part 1).

The op allow-lists refuse I/O ops before anything runs; these tests take the allow-list away
(in the child, through its API) and show the Landlock sandbox alone still stops a graph that
writes or reads outside the model folder and the child's scratch folder. Canary files prove
nothing was written; a control case (the same op aimed into an allowed folder) proves the op
really ran, so the check can fail.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from porter.errors import PorterError
from porter.verification import sandbox
from porter.verification.runtimes.child import ChildRuntime
from tests.security.conftest import run_capped

needs_landlock = pytest.mark.skipif(sandbox.landlock_abi() < 1,
                                    reason="this kernel has no Landlock to test")

_BUILD = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
v1 = tf.compat.v1
v1.disable_eager_execution()
out, canary, allowed, secret = sys.argv[1:5]

def save(name, make, data=False):
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 4], name="x")
        dep = make(x)
        if data:  # a stateless op is pruned from control dependencies: use its value
            y = tf.identity(x * 2.0 + tf.cast(dep, tf.float32) * 0.0, name="y")
        else:
            with tf.control_dependencies([dep]):
                y = tf.identity(x * 2.0, name="y")
    with open(os.path.join(out, name + ".pb"), "wb") as fh:
        fh.write(g.as_graph_def().SerializeToString())

save("write_outside", lambda x: tf.io.write_file(canary, "pwned"))
save("write_allowed", lambda x: tf.io.write_file(allowed, "ran"))
save("read_outside", lambda x: tf.strings.length(tf.io.read_file(secret)), data=True)
save("print_outside", lambda x: tf.print("pwned", output_stream="file://" + canary))
'''


@pytest.fixture(scope="module")
def graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sandbox")
    model, cwd = root / "model", root / "cwd"
    model.mkdir()
    (cwd / "allowed").mkdir(parents=True)
    (cwd / "secret").write_text("top secret")
    proc = run_capped(["-c", _BUILD, str(model), str(cwd / "CANARY"),
                       str(cwd / "allowed" / "RAN"), str(cwd / "secret")], cwd, timeout=300,
                      cap=None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return model, cwd


def _run_unchecked(graph: Path, write: list[Path] = ()) -> dict:
    payload = {"graph_bytes": graph.read_bytes(), "inputs": {"x": "x:0"},
               "outputs": {"y": "y:0"}, "layout": "none"}
    with ChildRuntime("tests.security.sandbox_targets:unchecked_frozen", payload,
                      name="tensorflow", write=write) as child:
        return child({"x": np.ones((1, 4), np.float32)})


@pytest.mark.slow
@needs_landlock
@pytest.mark.parametrize("name", ["write_outside", "print_outside"])
def test_tf_write_past_the_allow_list_is_stopped(graphs, name: str) -> None:
    model, cwd = graphs
    with pytest.raises(PorterError, match="(?i)permission denied|failed|error"):
        _run_unchecked(model / f"{name}.pb")
    assert not (cwd / "CANARY").exists()


@pytest.mark.slow
@needs_landlock
def test_tf_read_past_the_allow_list_is_stopped(graphs) -> None:
    model, cwd = graphs
    with pytest.raises(PorterError, match="(?i)permission denied") as info:
        _run_unchecked(model / "read_outside.pb")
    assert "top secret" not in str(info.value)


@pytest.mark.slow
@needs_landlock
def test_control_the_unchecked_op_really_runs_where_writing_is_allowed(graphs) -> None:
    model, cwd = graphs
    out = _run_unchecked(model / "write_allowed.pb", write=[cwd / "allowed"])
    np.testing.assert_array_equal(out["y"], np.full((1, 4), 2.0, np.float32))
    assert (cwd / "allowed" / "RAN").read_text() == "ran"


@needs_landlock
def test_child_cannot_read_home_or_write_outside_but_can_use_its_scratch(tmp_path: Path) -> None:
    secret, canary = tmp_path / "secret", tmp_path / "CANARY"
    secret.write_text("top secret")
    with ChildRuntime("tests.security.sandbox_probe:probe",
                      {"read": str(secret), "write": str(canary), "tmp": True}) as child:
        got = child({})
        scratch = Path(child.scratch)
        assert (scratch / "ok").read_bytes() == b"ok"  # control: the scratch folder works
    assert int(got["read"]) == 0 and int(got["write"]) == 0 and int(got["tmp"]) == 1
    assert not canary.exists()
    assert not scratch.exists()  # the scratch folder goes with the child


@needs_landlock
def test_model_folder_named_in_the_payload_is_readable_not_writable(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "m.pb").write_bytes(b"x")
    with ChildRuntime("tests.security.sandbox_probe:probe",
                      {"graph": str(model / "m.pb"), "read": str(model / "m.pb"),
                       "write": str(model / "m.pb")}) as child:
        got = child({})
    assert int(got["read"]) == 1 and int(got["write"]) == 0
    assert (model / "m.pb").read_bytes() == b"x"


@pytest.mark.slow
@needs_landlock
def test_paddle_child_save_and_load_outside_are_stopped(tmp_path: Path) -> None:
    secret, canary = tmp_path / "secret.pdparams", tmp_path / "CANARY.pdparams"
    secret.write_bytes(b"\x80\x02}q\x00.")  # an empty dict pickle: loading it would succeed
    with pytest.raises(PorterError, match="(?i)permission|denied|cannot|failed"):
        ChildRuntime("tests.security.sandbox_probe:paddle_save_load",
                     {"write": str(canary)}, preload=["paddle"])
    assert not canary.exists()
    with pytest.raises(PorterError, match="(?i)permission|denied|cannot|failed|no such"):
        ChildRuntime("tests.security.sandbox_probe:paddle_save_load",
                     {"read": str(secret)}, preload=["paddle"])


@needs_landlock
def test_wrapped_commands_are_confined_too(tmp_path: Path) -> None:
    """tf2onnx and paddle2onnx run through :func:`sandbox.wrap`."""
    ok, canary, secret = tmp_path / "ok", tmp_path / "CANARY", tmp_path / "secret"
    ok.mkdir()
    secret.write_text("top secret")
    script = f"echo ran > {ok}/RAN; echo pwned > {canary}; cat {secret}"
    proc = subprocess.run(sandbox.wrap(["/bin/sh", "-c", script], write=[ok]),
                          capture_output=True, text=True, timeout=60)
    assert (ok / "RAN").read_text().strip() == "ran"
    assert not canary.exists()
    assert "top secret" not in proc.stdout and proc.returncode != 0


def test_without_landlock_the_reference_is_refused_unless_opted_out(monkeypatch) -> None:
    monkeypatch.setattr(sandbox, "landlock_abi", lambda: 0)
    monkeypatch.delenv(sandbox.UNSANDBOXED_ENV, raising=False)
    with pytest.raises(sandbox.SandboxUnavailable, match="PORTER_UNSANDBOXED=1"):
        sandbox.confine()
    monkeypatch.setenv(sandbox.UNSANDBOXED_ENV, "1")
    assert sandbox.confine() == 0  # warns on stderr, applies nothing


class _System:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        import os

        return os.system, (self.cmd,)


def test_a_taken_over_child_cannot_make_the_parent_run_code(tmp_path: Path) -> None:
    """The parent reads replies with an unpickler that resolves no global: a hostile reply
    (what a child running an exploited framework could write) is refused, nothing runs."""
    import io
    import pickle

    from porter.verification.runtimes import child as child_mod

    canary = tmp_path / "CANARY"
    hostile = pickle.dumps(("ok", {"y": _System(f"touch {canary}")}))
    with pytest.raises(pickle.UnpicklingError, match="global"):
        child_mod._PlainUnpickler(io.BytesIO(hostile)).load()
    assert not canary.exists()
    arrays = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True]),
              "i": np.int64(3), "nested": [{"x": np.zeros((0, 2), np.float16)}]}
    plain = pickle.dumps(("ok", child_mod._encode(arrays)))
    kind, value = child_mod._PlainUnpickler(io.BytesIO(plain)).load()
    back = child_mod._decode(value)
    np.testing.assert_array_equal(back["f"], arrays["f"])
    assert back["f"].dtype == np.float32 and back["i"] == 3
    assert back["nested"][0]["x"].shape == (0, 2)
    for bad in ({"__porter_ndarray__": ("|O", [1], b"\0" * 8)},
                {"__porter_ndarray__": ("<f4", [4], b"\0" * 8)}):
        with pytest.raises(ValueError):
            child_mod._decode(bad)
