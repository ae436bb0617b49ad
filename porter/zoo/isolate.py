"""Run one call in a process of its own without paying the heavy imports for each call.

``porter zoo build`` on Ray builds every entry in a process of its own, so a converter that
crashes or leaks takes nothing else down. A fresh process per entry gives that isolation but
imports torch, onnx and onnxruntime again for every entry (seconds each, which made a Ray build
slower than one process). Instead each call is a child forked from a *forkserver* that
imported those libraries (:data:`PRELOAD`) once: one server per machine, user and
environment (:mod:`porter.zoo.node_server`), shared by every Ray worker on the node and by
every later build (a new Ray job's workers are new processes; the server is not). The child
starts with everything imported, runs the call, sends its result back and exits; its memory
goes with it.

The server, not a Ray worker, is what forks: a Ray worker runs gRPC and other threads, and
forking a threaded process can leave the child holding locks no thread will release. Nothing
in the server runs a torch or onnxruntime kernel, so no thread pool exists to be inherited
half-made (the preload imports modules only).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["PRELOAD", "ChildCrashed", "ChildTimedOut", "describe_exit", "run_isolated"]

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


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code} before reporting"


def run_isolated(fn: Callable[..., Any], *args: Any, timeout_s: float | None = None,
                 preload: Sequence[str] = PRELOAD) -> Any:
    """``fn(*args)`` in a child forked from this node's shared forkserver (one per machine,
    user and environment, :mod:`porter.zoo.node_server`); its value or its raise.

    The child runs with this process's environment and working folder as they are now (a Ray
    worker's per-task variables, e.g. which accelerators it may use), not as they were when
    the forkserver started.

    ``fn`` and ``args`` must pickle (``fn`` a module-level function). ChildCrashed when the
    child dies without a result; ChildTimedOut when it is still running ``timeout_s`` plus
    :data:`KILL_GRACE_S` seconds after it started (``fn`` should stop itself at ``timeout_s``).
    ``preload`` is part of the server's identity: the server for another set is another one.
    """
    from porter.zoo.node_server import run_on_node

    return run_on_node(fn, *args, timeout_s=timeout_s, preload=preload)
