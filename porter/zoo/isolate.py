"""Run one call in a process of its own without paying the heavy imports for each call.

``porter zoo build`` on Ray builds every entry in a process of its own, so a converter that
crashes or leaks takes nothing else down. A fresh Ray worker per entry gives that isolation but
imports torch, onnx and onnxruntime again for every entry (seconds each, which made a Ray build
slower than one process). Here a long-lived Ray worker keeps one ``multiprocessing``
*forkserver*: a single-threaded process started once per worker that imports those libraries
(:data:`PRELOAD`) and then forks a child per call. The child starts with everything imported,
runs the call, sends its result back through a pipe and exits; its memory goes with it.

The forkserver, not the Ray worker, is what forks: a Ray worker runs gRPC and other threads,
and forking a threaded process can leave the child holding locks no thread will release.
Nothing in the forkserver runs a torch or onnxruntime kernel, so no thread pool exists to be
inherited half-made (the preload imports modules only).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["PRELOAD", "ChildCrashed", "ChildTimedOut", "run_isolated"]

#: What the forkserver imports once; a module that is not installed is skipped. Besides the
#: libraries: every importer and graph module (the registries import them all on their first
#: lookup, 0.1 s in each child otherwise) and torch's symbolic shapes (the first meta tensor
#: imports them).
PRELOAD: tuple[str, ...] = (
    "numpy", "numpy.random", "torch", "torch.fx", "torch.fx.experimental.symbolic_shapes",
    "sympy", "networkx", "onnx", "onnxruntime",
    "safetensors.torch", "porter.pipeline", "porter.importers", "porter.importers.onnx",
    "porter.importers.tf1", "porter.importers.paddle", "porter.importers.safetensors_",
    "porter.importers.torch_ckpt", "porter.graphs", "porter.graphs.modnet",
    "porter.graphs.mtcnn", "porter.graphs.bshm", "porter.graphs.bgmv2", "porter.graphs.ben2",
    "porter.mapping.align", "porter.generic", "porter.converters", "porter.converters.ops",
    "porter.targets.torch_", "porter.targets.onnx", "porter.inference",
    "porter.verification", "porter.verification.report",
    "porter.verification.runtimes.onnxruntime", "porter.verification.runtimes.torch_",
    "porter.zoo.publish", "porter.zoo.catalog", "porter.zoo.card", "porter.zoo.st_write",
    "porter.zoo.atomic", "porter.zoo.build",
)
# After this many seconds past its own deadline a child is killed (its SIGALRM should have
# stopped it; this catches a child stuck in native code that never returns to Python).
KILL_GRACE_S = 15.0


class ChildCrashed(Exception):
    """The child died without sending a result (a signal, or an exit status)."""

    def __init__(self, how: str) -> None:
        super().__init__(how)
        self.how = how


class ChildTimedOut(Exception):
    """The child outlived its deadline plus the grace period and was killed."""


_CONTEXT: Any = None


def _context(preload: Sequence[str]) -> Any:
    """The forkserver context, its preload set once per process (before the server starts)."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(list(preload))
        _CONTEXT = ctx
    return _CONTEXT


@contextlib.contextmanager
def _main_script_not_rerun() -> Iterator[None]:
    """Keep multiprocessing from re-running this process's main script in the child.

    A child started through the forkserver re-runs the parent's ``__main__`` file (as
    ``__mp_main__``) unless ``__main__`` names a module. In a Ray worker that file is Ray's
    ``default_worker.py``: every child imported Ray again (0.5 s each). ``fn`` is a
    module-level function of an importable module, so the child never needs the script.
    """
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None:
        yield  # run with -m, or embedded: the child imports nothing for it
        return
    main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = None


def _child(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...],
           environ: dict[str, str], cwd: str) -> None:
    """In the child: take the caller's environment and folder, run ``fn(*args)``, and send
    ``("ok", value)`` or ``("raise", exc)``."""
    os.environ.clear()  # the forkserver's copy is as old as the server; the caller's is now
    os.environ.update(environ)
    os.chdir(cwd)
    try:
        message: tuple[str, Any] = ("ok", fn(*args))
    except BaseException as exc:  # sent to the parent, which re-raises it
        message = ("raise", exc)
    try:
        data = pickle.dumps(message)
    except Exception as exc:  # an unpicklable value or exception: its text still gets back
        data = pickle.dumps(("raise", RuntimeError(f"{type(message[1]).__name__}: "
                                                   f"{message[1]} (not picklable: {exc})")))
    conn.send_bytes(data)
    conn.close()


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code} before reporting"


def run_isolated(fn: Callable[..., Any], *args: Any, timeout_s: float | None = None,
                 preload: Sequence[str] = PRELOAD) -> Any:
    """``fn(*args)`` in a child forked from this process's forkserver; its value or its raise.

    The child runs with this process's environment and working folder as they are now (a Ray
    worker's per-task variables, e.g. which accelerators it may use), not as they were when
    the forkserver started.

    ``fn`` and ``args`` must pickle (``fn`` a module-level function). ChildCrashed when the
    child dies without a result; ChildTimedOut when it is still running ``timeout_s`` plus
    :data:`KILL_GRACE_S` seconds after it started (``fn`` should stop itself at ``timeout_s``).
    ``preload`` counts on the first call in a process only: that call starts the forkserver.
    """
    ctx = _context(preload)
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, dict(os.environ), os.getcwd()),
                       daemon=True,
                       name=f"porter-isolated-{os.getpid()}")
    with _main_script_not_rerun():
        proc.start()
    send.close()  # the child holds the only write end: EOF on the pipe means it is gone
    try:
        limit = None if timeout_s is None else timeout_s + KILL_GRACE_S
        ready = multiprocessing.connection.wait([receive], timeout=limit)
        if not ready:
            proc.kill()
            raise ChildTimedOut(f"still running {limit:g} s after it started; killed")
        try:
            data = receive.recv_bytes()
        except (EOFError, OSError):  # no result: the child died first
            proc.join()
            raise ChildCrashed(_describe_exit(proc.exitcode)) from None
        proc.join()
        try:
            status, value = pickle.loads(data)
        except Exception as exc:  # e.g. an exception class only the child had imported
            raise RuntimeError(f"the isolated call's result could not be read here: "
                               f"{type(exc).__name__}: {exc}") from None
    finally:
        receive.close()
        if proc.is_alive():
            proc.kill()
            proc.join()
    if status == "raise":
        raise value
    return value
