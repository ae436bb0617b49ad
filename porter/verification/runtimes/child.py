"""Run a framework (TensorFlow, Paddle) in a child process and call it like a local runner.

Why: TensorFlow and Paddle ship conflicting native libraries (importing paddle after tensorflow
in one process segfaults here), and a framework crash must not take porter down with it. The
child imports ``target`` ("pkg.module:factory"); ``factory(payload)`` returns a runner
``dict[str, ndarray] -> dict[str, ndarray]``. Messages go over a private pipe (the child's
original stdout); the child's fd 1 goes to stderr so framework chatter cannot corrupt the
channel. Parent -> child messages are pickles (porter's own data); child -> parent replies are
pickles of plain containers only, arrays as (dtype, shape, bytes), read back by an unpickler
that resolves no global at all: a child taken over by a hostile model cannot make the
unconfined parent run code.

The child is confined (:mod:`porter.verification.sandbox`) before the factory sees the payload:
it imports the target module and ``preload`` (trusted framework code), then may read only the
system paths, porter's package, ``read`` and the folders of the model files the payload names
(``graph``, ``meta``, ``checkpoint``, ``model``, ``params``; porter's own references are fed the
bytes porter read and hashed instead, in ``graph_bytes`` / ``pinned``), and write only its
private scratch folder (``TMPDIR`` and ``HOME`` point there; removed on close) and ``write``.
"""

from __future__ import annotations

import importlib
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from porter.errors import PorterError

__all__ = ["ChildRuntime", "unpin"]


class ChildRuntime:
    """A runner living in a child Python process; use as a context manager or call ``close``."""

    def __init__(self, target: str, payload: Mapping[str, Any] | None = None,
                 name: str | None = None, env: Mapping[str, str] | None = None,
                 read: Sequence[str | os.PathLike] = (), write: Sequence[str | os.PathLike] = (),
                 preload: Sequence[str] = ()) -> None:
        self.target, self.name = target, name or target
        self.scratch = tempfile.mkdtemp(prefix="porter-child-")
        from porter.verification.sandbox import porter_pythonpath

        child_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {}),
                     "TMPDIR": self.scratch, "HOME": self.scratch}
        # this porter first (its folder is what the sandbox lets the child read), then the
        # caller's path (a builder's scripts folder)
        child_env["PYTHONPATH"] = porter_pythonpath(child_env.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "porter.verification.runtimes.child"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env)
        spec = {"read": [*(str(p) for p in read), *_model_folders(payload or {})],
                "write": [self.scratch, *(str(p) for p in write)], "preload": list(preload)}
        try:
            self._send(("init", target, dict(payload or {}), spec))
            self.info = self._receive()
        except BaseException:
            self.close()
            raise

    def _send(self, msg: Any) -> None:
        try:
            pickle.dump(msg, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise PorterError(f"{self.name}: child runtime died ({self._stderr_tail()})") from exc

    def _receive(self) -> Any:
        try:
            kind, value = _PlainUnpickler(self.proc.stdout).load()
            value = _decode(value)
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError,
                IndexError, KeyError, RecursionError) as exc:
            raise PorterError(f"{self.name}: child runtime died ({self._stderr_tail()})") from exc
        if kind == "error":
            raise PorterError(f"{self.name}: {value}")
        return value

    def _stderr_tail(self) -> str:
        self.proc.poll()
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            err = self.proc.stderr.read().decode(errors="replace").strip().splitlines()
        except (OSError, ValueError):
            err = []
        code = self.proc.wait(timeout=30)
        # the child's stdout is merged into stderr (see _serve); frameworks colour their logs
        err = [re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", ln).strip() for ln in err]
        errors = [ln for ln in err if "rror" in ln and "Warning" not in ln]
        tail = (errors or [ln for ln in err if ln] or ["no message"])[-1]
        return f"exit code {code}: {tail}"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self._send(("run", {k: np.asarray(v) for k, v in inputs.items()}))
        return self._receive()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._send(("close",))
            except PorterError:
                pass
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> ChildRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            shutil.rmtree(self.scratch, ignore_errors=True)
        except Exception:
            pass


class _PlainUnpickler(pickle.Unpickler):
    """Containers, strings, bytes and numbers only: no global, no persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"child reply names a global ({module}.{name})")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("child reply uses a persistent id")


_ND = "__porter_ndarray__"


def _encode(obj: Any) -> Any:
    """A reply as plain containers: arrays become ``{_ND: (dtype, shape, bytes)}``."""
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc" or obj.dtype.fields is not None:
            raise TypeError(f"a reference output of dtype {obj.dtype} cannot be returned")
        a = obj if obj.flags.c_contiguous else np.array(obj, order="C")  # keeps 0-d
        return {_ND: (a.dtype.str, list(a.shape), a.tobytes())}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): _encode(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_encode(v) for v in obj]
    if obj is None or isinstance(obj, (str, bytes, bool, int, float)):
        return obj
    return str(obj)  # a framework object in ``info`` (a dtype, a path): its text


def _decode(obj: Any) -> Any:
    """Inverse of :func:`_encode`, checking each array's dtype and byte length."""
    if isinstance(obj, dict):
        if set(obj) == {_ND}:
            dtype_str, shape, raw = obj[_ND]
            dtype = np.dtype(str(dtype_str))
            shape = tuple(int(d) for d in shape)
            if dtype.kind not in "biufc" or dtype.fields is not None or any(d < 0 for d in shape):
                raise ValueError(f"child reply holds an array of dtype {dtype} shape {shape}")
            if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.itemsize:
                raise ValueError("child reply holds an array whose bytes do not match its shape")
            return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


#: payload keys that name a model file (or checkpoint prefix) a factory may open
_PATH_KEYS = ("graph", "meta", "checkpoint", "model", "params")


def unpin(payload: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """In the child: write ``payload["pinned"]`` (file name -> the bytes porter read and hashed)
    into the child's private scratch folder and point ``payload[key]`` for each of ``keys`` at
    those copies, so the framework never opens a path that could have been swapped."""
    from pathlib import Path

    payload = dict(payload)
    files = payload.pop("pinned", None)
    if not files:
        return payload
    folder = Path(tempfile.mkdtemp(prefix="pinned-"))  # TMPDIR: the child's own scratch
    for name, data in files.items():
        if "/" in name or name in ("", ".", ".."):
            raise ValueError(f"pinned file name {name!r} is not a plain name")
        (folder / name).write_bytes(data)
    for key in keys:
        if payload.get(key):
            payload[key] = str(folder / Path(str(payload[key])).name)
    return payload


def _model_folders(payload: Mapping[str, Any]) -> list[str]:
    """The folders of the model files a payload names: readable (only) in the child."""
    out = set()
    for key in _PATH_KEYS:
        value = payload.get(key)
        if isinstance(value, (str, os.PathLike)) and str(value):
            path = os.path.abspath(os.fspath(value))
            out.add(path if os.path.isdir(path) else os.path.dirname(path))
    return sorted(out)


def _serve() -> None:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed by a framework goes to stderr, not the channel
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    runner = None
    while True:
        try:
            msg = pickle.load(stdin)
        except EOFError:
            return
        try:
            if msg[0] == "init":
                mod, _, attr = msg[1].partition(":")
                factory = getattr(importlib.import_module(mod), attr)
                spec = msg[3]
                # trusted code first (the framework's own imports read and cache freely) ...
                for name in (*getattr(sys.modules[mod], "PRELOAD", ()), *spec["preload"]):
                    importlib.import_module(name)
                # ... then, before the payload's model bytes are parsed, the sandbox
                from porter.verification.sandbox import confine

                confine(spec["read"], spec["write"])
                runner = factory(msg[2])
                reply = ("ok", getattr(runner, "info", {}))
            elif msg[0] == "run":
                reply = ("ok", {k: np.asarray(v) for k, v in runner(msg[1]).items()})
            else:
                return
        except Exception as exc:  # reported to the parent as a one-line error
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            data = pickle.dumps((reply[0], _encode(reply[1])), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:  # an unpicklable / non-numeric result: say so, plainly
            data = pickle.dumps(("error", f"{type(exc).__name__}: {exc}"))
        channel.write(data)
        channel.flush()


if __name__ == "__main__":
    _serve()
