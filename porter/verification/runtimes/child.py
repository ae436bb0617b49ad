"""Run a framework (TensorFlow, Paddle) in a child process and call it like a local runner.

Why: TensorFlow and Paddle ship conflicting native libraries (importing paddle after tensorflow
in one process segfaults here), and a framework crash must not take porter down with it. The
child imports ``target`` ("pkg.module:factory"); ``factory(payload)`` returns a runner
``dict[str, ndarray] -> dict[str, ndarray]``. Messages are pickles between porter's own
processes over a private pipe (the child's original stdout); the child's fd 1 goes to stderr so
framework chatter cannot corrupt the channel.

The child is confined (:mod:`porter.verification.sandbox`) before the factory sees the payload:
it imports the target module and ``preload`` (trusted framework code), then may read only the
system paths, porter's package, ``read`` and the folders of the model files the payload names
(``graph``, ``meta``, ``checkpoint``, ``model``, ``params``; porter's own references are fed the
bytes porter read and hashed instead, in ``graph_bytes`` / ``pinned``), and write only its
private scratch folder (``TMPDIR`` and ``HOME`` point there; removed on close) and ``write``.
"""

from __future__ import annotations

import importlib
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

__all__ = ["ChildRuntime"]


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
            kind, value = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError) as exc:
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


#: payload keys that name a model file (or checkpoint prefix) a factory may open
_PATH_KEYS = ("graph", "meta", "checkpoint", "model", "params")


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
        pickle.dump(reply, channel, protocol=pickle.HIGHEST_PROTOCOL)
        channel.flush()


if __name__ == "__main__":
    _serve()
