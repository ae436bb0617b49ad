"""onnxruntime as a parity reference (CPU, fixed thread count, no graph rewrites beyond basic)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError, PorterError

__all__ = ["OrtRunner", "omp_threads", "ort_verbose", "session_options", "source_runner"]

_IR_TOO_NEW = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")

# onnxruntime's severities: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal
_QUIET, _VERBOSE = 3, 2


def ort_verbose() -> bool:
    """Whether onnxruntime may print its own warnings: ``PORTER_VERBOSE`` set (``--verbose``)."""
    import os

    return os.environ.get("PORTER_VERBOSE", "") not in ("", "0")


def session_options() -> Any:
    """``SessionOptions`` that keep onnxruntime's logging to errors unless verbose, and its
    intra-op threads to ``OMP_NUM_THREADS`` where that is set (:func:`omp_threads`).

    onnxruntime warns about every unused initializer and every node it cannot place on a
    fast path (hundreds of lines for one model); none of it is porter's output.
    """
    import onnxruntime as ort

    level = _VERBOSE if ort_verbose() else _QUIET
    ort.set_default_logger_severity(level)  # warnings raised before a session logger exists
    so = ort.SessionOptions()
    so.log_severity_level = level
    threads = omp_threads()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    return so


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive count, or None when unset or not a count.

    torch's pool obeys that variable and onnxruntime's does not (it starts one thread per
    physical core). A Ray task granted one CPU has it set to 1: two such tasks on two cores
    each ran a two-thread, spinning onnxruntime pool, and the oversubscribed pools slowed
    both. onnxruntime is held to the same count unless a caller asks for threads itself.
    """
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return threads if threads > 0 else None


def _message(exc: Exception) -> str:
    """onnxruntime's own message, first line, without its ``[ONNXRuntimeError] : 2 : …`` prefix."""
    text = str(exc).strip()
    return text.splitlines()[0].split(" : ")[-1] if text else type(exc).__name__


class OrtRunner:
    """Callable runner over an ONNX model (path, bytes or ModelProto)."""

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes | Any, threads: int | None = None,
                 optimization: str = "basic",
                 initializers: Mapping[str, np.ndarray] | None = None) -> None:
        import onnxruntime as ort

        so = session_options()
        if initializers:
            # the model's external initializers, handed over as arrays: onnxruntime never
            # resolves a location itself (from bytes it would resolve against the current
            # directory), and a memory-mapped array is shared, not copied
            arrays = [np.require(a, requirements=["C", "A"]) for a in initializers.values()]
            self._keep = arrays  # onnxruntime views them for the session's lifetime
            so.add_external_initializers(list(initializers),
                                         [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays])
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if hasattr(model, "SerializeToString"):
            model = model.SerializeToString()
        self.note = ""
        try:
            self.session = self._session(model, so)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            older = _IR_TOO_NEW.search(str(exc))
            if older is None or not isinstance(model, bytes):
                raise FormatError(f"onnxruntime {ort.__version__} cannot load the model: "
                                  f"{_message(exc)}") from exc
            self.session = self._older_ir(model, so, int(older.group(1)), int(older.group(2)))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.version = ort.__version__

    @staticmethod
    def _session(model: bytes | str | Path, so: Any) -> Any:
        import onnxruntime as ort

        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), so,
                                    providers=["CPUExecutionProvider"])

    def _older_ir(self, model: bytes, so: Any, declared: int, supported: int) -> Any:
        """The session over ``model`` declared at IR ``supported``: the IR version numbers
        the file format, the opsets define what the graph computes, and a feature of a newer
        IR that onnxruntime lacks still fails the load. Says so in ``note``."""
        import onnx
        import onnxruntime as ort

        proto = onnx.load_from_string(model)
        proto.ir_version = supported
        try:
            session = self._session(proto.SerializeToString(), so)
        except Exception as exc:
            raise FormatError(f"onnxruntime {ort.__version__} reads ONNX IR <= {supported} and "
                              f"the file declares IR {declared}; read as IR {supported} it "
                              f"still fails: {_message(exc)}") from exc
        self.note = (f"onnxruntime {ort.__version__} reads ONNX IR <= {supported}; the file "
                     f"declares IR {declared} and ran as IR {supported} (same graph, same "
                     "opsets)")
        return session

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        import threading

        import onnxruntime as ort

        feeds = {k: np.ascontiguousarray(v) for k, v in inputs.items() if k in self.input_names}
        # a crafted graph (a Loop whose condition never turns false) must not hang the check
        limit = float(os.environ.get("PORTER_ORT_TIMEOUT", 1800))
        options = ort.RunOptions()
        options.log_severity_level = 4  # the terminate notice is ours to report, in one line
        timer = threading.Timer(limit, lambda: setattr(options, "terminate", True))
        timer.daemon = True
        timer.start()
        try:
            outs = self.session.run(self.output_names, feeds, options)
        except Exception as exc:  # the model rejects these inputs (shape, value, type)
            if options.terminate:
                raise PorterError(f"onnxruntime ran past {limit:g} s on one case (raise "
                                  "PORTER_ORT_TIMEOUT)") from exc
            shapes = ", ".join(f"{k}={'x'.join(map(str, v.shape))}" for k, v in feeds.items())
            raise PorterError(f"onnxruntime cannot run the model on {shapes}: {_message(exc)}; "
                              "set input sizes with --shape NAME=DIMS") from exc
        finally:
            timer.cancel()
        return dict(zip(self.output_names, outs))


def source_runner(source: Any, threads: int | None = None, optimization: str = "basic"
                  ) -> OrtRunner:
    """An onnxruntime runner over an imported ONNX ``Source``: porter's parsed ModelProto (the
    path is never opened again) with each external initializer given as the array porter's
    bounds-checked importer maps, so both runtimes see the bytes porter read and hashed."""
    from onnx import TensorProto

    model = source.native
    if model is None:
        raise PorterError(f"{source.path}: no parsed ONNX model to run")
    external = [t.name for t in model.graph.initializer
                if t.data_location == TensorProto.EXTERNAL]
    missing = [n for n in external if n not in source.tensors]
    if missing:
        raise FormatError(f"{source.path}: external initializer {missing[0]!r} is not among the "
                          "tensors porter imported")
    arrays = {n: source.tensors[n].numpy() for n in external}
    return OrtRunner(model.SerializeToString(), threads, optimization, initializers=arrays)
