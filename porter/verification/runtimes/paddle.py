"""Paddle as a parity reference; these factories run *inside* a ChildRuntime, never in porter.

Paddle must not share a process with TensorFlow (that segfaults here), so use::

    with paddle_inference_runtime("model_dir") as run:          # Paddle Inference predictor
        out = run({"x": arr})
    with ChildRuntime("porter.verification.runtimes.paddle:dygraph", {
            "builder": "pkg.mod:build", "kwargs": {...}, "params": "m.pdparams",
            "outputs": ["alpha"]}) as run: ...

Runners take and return ``dict[str, np.ndarray]``. The predictor runs on CPU with IR
optimisation and oneDNN off, so it executes the program as written (fused kernels would change
the last bits, and parity must be against the model, not a rewrite of it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["inference", "dygraph", "paddle_inference_runtime", "dygraph_runtime",
           "LEGACY_ENV", "PIR_ENV"]

#: imported by the ChildRuntime before it confines itself (see porter.verification.sandbox)
PRELOAD = ("paddle", "paddle.inference")

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]

#: Paddle 3.x reads a legacy ``.pdmodel`` only with the PIR API off; a ``.json`` needs it on.
LEGACY_ENV = {"FLAGS_enable_pir_api": "0", "GLOG_v": "0", "GLOG_minloglevel": "2"}
PIR_ENV = {"FLAGS_enable_pir_api": "1", "GLOG_v": "0", "GLOG_minloglevel": "2"}


def _quiet_paddle() -> Any:
    import warnings

    warnings.filterwarnings("ignore")
    import paddle

    return paddle


def inference(payload: Mapping[str, Any]) -> Runner:
    """Paddle Inference predictor. payload: ``model`` (.pdmodel/.json), ``params`` (.pdiparams),
    optional ``threads`` (default 1) and ``ir_optim`` (default False)."""
    _quiet_paddle()
    from paddle import inference as pi

    payload = _unpin(payload)
    config = pi.Config(str(payload["model"]), str(payload["params"]))
    config.disable_gpu()
    config.switch_ir_optim(bool(payload.get("ir_optim", False)))
    config.disable_mkldnn()
    config.set_cpu_math_library_num_threads(int(payload.get("threads", 1)))
    config.disable_glog_info()
    predictor = pi.create_predictor(config)
    in_names = list(predictor.get_input_names())
    out_names = list(predictor.get_output_names())

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in in_names if n not in inputs]
        if missing:
            raise KeyError(f"missing inputs {missing} (model inputs: {in_names})")
        for name in in_names:
            handle = predictor.get_input_handle(name)
            arr = np.ascontiguousarray(inputs[name])
            handle.reshape(list(arr.shape))
            handle.copy_from_cpu(arr)
        predictor.run()
        return {n: predictor.get_output_handle(n).copy_to_cpu() for n in out_names}

    import paddle

    run.info = {"runtime": "paddle-inference", "version": paddle.__version__,
                "inputs": in_names, "outputs": out_names}
    return run


def _unpin(payload: Mapping[str, Any]) -> dict[str, Any]:
    from porter.verification.runtimes.child import unpin

    return unpin(payload, ("model", "params"))


def dygraph(payload: Mapping[str, Any]) -> Runner:
    """A ``paddle.nn.Layer`` in eval mode. payload: ``builder`` ("pkg.mod:fn" returning the
    layer), optional ``kwargs``, ``params`` (a .pdparams to ``set_state_dict``), ``inputs``
    (argument names in call order; default: the input dict's order), ``outputs`` (names for a
    tuple/list result; a dict result keeps its keys; a single tensor is ``"output"``).
    ``state`` (name -> numpy array, the tensors porter itself read and hashed) is preferred to
    ``params``: paddle.load is a full unpickler, and a path can be swapped after porter's safe
    read, so a reference for an untrusted file must never reopen it."""
    paddle = _quiet_paddle()
    paddle.set_device("cpu")
    mod, _, attr = str(payload["builder"]).partition(":")
    layer = getattr(importlib.import_module(mod), attr)(**dict(payload.get("kwargs") or {}))
    if payload.get("state") is not None:
        state = {k: paddle.to_tensor(np.asarray(v)) for k, v in payload["state"].items()}
        missing, unexpected = layer.set_state_dict(state)
        if missing or unexpected:
            raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    elif payload.get("params"):  # porter's own fixtures only; see ``state``
        state = paddle.load(str(payload["params"]))
        missing, unexpected = layer.set_state_dict(state)
        if missing or unexpected:
            raise KeyError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    layer.eval()
    arg_names = payload.get("inputs")
    out_names = payload.get("outputs")

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = list(arg_names or inputs)
        with paddle.no_grad():
            result = layer(*[paddle.to_tensor(np.asarray(inputs[n])) for n in names])
        if isinstance(result, dict):
            return {k: v.numpy() for k, v in result.items()}
        if isinstance(result, (tuple, list)):
            keys = out_names or [f"output_{i}" for i in range(len(result))]
            return {k: v.numpy() for k, v in zip(keys, result)}
        return {(out_names or ["output"])[0]: result.numpy()}

    run.info = {"runtime": "paddle-dygraph", "version": paddle.__version__,
                "builder": payload["builder"]}
    return run


def paddle_inference_runtime(model: str | Path, params: str | Path | None = None,
                             threads: int = 1, pinned: Mapping[str, bytes] | None = None) -> Any:
    """A ChildRuntime over Paddle Inference for a model file (or folder) and its params.

    The PIR flag is set from the model file's kind (``.json`` -> on, ``.pdmodel`` -> off).
    ``pinned`` (file name -> bytes, a paddle-inference Source's ``native``) hands the child the
    bytes porter read and hashed: it runs private copies and never opens the paths.
    """
    from porter.importers.paddle_program import find_model_files
    from porter.verification.runtimes.child import ChildRuntime

    if params is None:
        found = find_model_files(Path(model))
        if found is None:
            raise FileNotFoundError(f"{model}: no Paddle inference model found")
        model, params = found
    env = PIR_ENV if str(model).endswith(".json") else LEGACY_ENV
    payload: dict[str, Any] = {"model": str(model), "params": str(params), "threads": threads}
    if pinned:
        names = {Path(str(model)).name, Path(str(params)).name}
        payload["pinned"] = {k: bytes(v) for k, v in pinned.items() if k in names}
        if set(payload["pinned"]) != names:
            raise ValueError(f"pinned bytes given for {sorted(pinned)}, not for {sorted(names)}")
    return ChildRuntime("porter.verification.runtimes.paddle:inference", payload,
                        name="paddle-inference", env={**env, "OMP_NUM_THREADS": str(threads)})


def dygraph_runtime(builder: str, params: str | Path | None = None,
                    kwargs: Mapping[str, Any] | None = None,
                    inputs: list[str] | None = None, outputs: list[str] | None = None,
                    extra_env: Mapping[str, str] | None = None,
                    state: Mapping[str, np.ndarray] | None = None) -> Any:
    """A ChildRuntime over a ``paddle.nn`` model built by ``builder`` ("pkg.mod:fn"), its
    weights from ``state`` (arrays porter read; preferred) or a trusted ``params`` file."""
    from porter.verification.runtimes.child import ChildRuntime

    payload = {"builder": builder, "kwargs": dict(kwargs or {}),
               "state": None if state is None else {k: np.asarray(v) for k, v in state.items()},
               "params": str(params) if params else None, "inputs": inputs, "outputs": outputs}
    env = {"GLOG_minloglevel": "2", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(),
                                                       os.environ.get("PYTHONPATH")])),
           **(extra_env or {})}
    # the builder is porter's own code: imported before the child confines itself
    return ChildRuntime("porter.verification.runtimes.paddle:dygraph", payload,
                        name="paddle-dygraph", env=env, preload=[builder.partition(":")[0]])
