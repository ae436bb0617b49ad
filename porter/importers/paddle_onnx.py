"""Paddle inference model -> ONNX through paddle2onnx, in a child process.

Why a child and which paddle2onnx paths: paddle2onnx imports paddle at import time (and paddle
must never share a process with TensorFlow), so the export runs in ``python -m
porter.importers.paddle_onnx``. paddle2onnx 2.1.0 pins ``onnx<=1.17`` and wants onnxoptimizer
and polygraphy, but the conversion itself is its C++ extension (``c_p2o.export``) with its own
bundled ONNX checker and optimiser; the Python ``onnx``/``onnxoptimizer``/``polygraphy`` are
imported only by the post-pass that runs when ``export`` is given a ``save_file`` (constant
folding with polygraphy by default). porter calls ``export(..., save_file=None)`` and gets the
serialized model back, so none of them is imported; the model is then parsed with porter's own
onnx (1.23.2). That is why paddle2onnx is installed with ``--no-deps`` and why its pins do not
hold porter's onnx back. Legacy ``.pdmodel`` programs are translated to PIR by paddle2onnx
itself (``paddle.pir.translate_to_pir``); porter passes the model files unchanged.

One repair is applied to what paddle2onnx emits (:func:`repair_scalar_concat`): a Paddle shape
list built from 0-d slices (``reshape(x, [x.shape[0], -1])`` after ``translate_to_pir``) comes
out as an ONNX ``Concat`` of 0-d and 1-d tensors, which ONNX forbids (onnxruntime refuses the
model). Each 0-d input is wrapped in ``Unsqueeze(axes=[0])``, which is exactly the 1-element
list Paddle meant. The number of repairs is recorded in the model's ``metadata_props``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from porter.errors import FormatError, PorterError
from porter.source import Source

__all__ = ["paddle_to_onnx", "export_in_child", "repair_scalar_concat", "rename_outputs",
           "child_failure"]


def export_in_child(model: Path, params: Path, out: Path, opset: int = 11,
                    timeout: float = 600) -> None:
    """Run paddle2onnx on (model, params) in a child process, writing ``out``."""
    from porter.verification.sandbox import wrap

    env = {**os.environ, "GLOG_minloglevel": "2", "OMP_NUM_THREADS": "1",
           "FLAGS_enable_pir_api": "1", "TMPDIR": str(out.parent), "HOME": str(out.parent),
           "PYTHONHASHSEED": "0"}  # one converter run per graph, whatever the parent's hashing
    cmd = [sys.executable, "-m", "porter.importers.paddle_onnx", str(model), str(params),
           str(out), str(opset)]
    # paddle2onnx parses the program in C++: confined to the model's folder and ``out``'s
    proc = subprocess.run(wrap(cmd, read=sorted({str(model.parent), str(params.parent)}),
                               write=[str(out.parent)]),
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        reason = child_failure(proc.stdout, proc.stderr) or f"exit code {proc.returncode}"
        raise PorterError(f"paddle2onnx failed on {model.name} (exit code {proc.returncode}): "
                          f"{reason}")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_NOISE = ("Warning", "warnings.warn", "UserWarning", "ccache")


def child_failure(stdout: str | None, stderr: str | None, limit: int = 600) -> str:
    """The failure message of a child run, from its stdout *and* stderr, as one line.

    paddle2onnx's C++ side prints its reason (``[ERROR] Failed to convert PaddlePaddle model:
    (Unimplemented) the 0th elementwise MUST be ir::FloatAttribute``) on stdout, Python errors
    land on stderr. The first error line of either stream and what follows it (Paddle's hint and
    source location) are joined; otherwise the last non-noise line.
    """
    lines = []
    for text in (stdout or "", stderr or ""):
        lines += [_ANSI.sub("", ln).strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln and not any(n in ln for n in _NOISE)]
    for k, ln in enumerate(lines):
        if "ERROR" in ln or "rror:" in ln or "Error" in ln.split(" ", 1)[0]:
            msg = " ".join(lines[k:k + 3]).strip(" .")
            return msg[:limit] + ("…" if len(msg) > limit else "")
    return lines[-1][:limit] if lines else ""


def paddle_to_onnx(source: Source | str | Path, opset: int = 11) -> Any:
    """``onnx.ModelProto`` for a Paddle inference model (a Source, a file or a folder)."""
    import onnx

    from porter.importers.paddle_program import find_model_files

    if not isinstance(source, Source):
        from porter.importers.paddle_program import load_inference

        source = load_inference(Path(source))
    path = source.path
    pair = find_model_files(path)
    if pair is None:
        raise FormatError(f"{path}: no Paddle inference model to convert to ONNX")
    with tempfile.TemporaryDirectory(prefix="porter-p2o-") as tmp:
        out = Path(tmp) / "model.onnx"
        export_in_child(pair[0], pair[1], out, opset)
        model = onnx.load(str(out))
    model.producer_name = model.producer_name or "paddle2onnx"
    names = [o["name"] for o in source.meta.get("outputs", [])]
    if source.meta.get("program_format") == "program-desc":
        rename_outputs(model, names)
    repaired = repair_scalar_concat(model)
    if repaired:
        entry = model.metadata_props.add()
        entry.key, entry.value = "porter.repair_scalar_concat", str(repaired)
    return model


def rename_outputs(model: Any, names: list[str]) -> None:
    """Give the graph outputs Paddle's fetch names (paddle2onnx calls them ``fetch_name_i``)."""
    outs = model.graph.output
    if len(names) != len(outs) or not all(names):
        return
    from porter.export.io_names import rename_values

    # an inner value that already bears a fetch name moves aside (never two values merged)
    rename_values(model.graph, {o.name: n for o, n in zip(outs, names)})


def repair_scalar_concat(model: Any) -> int:
    """Unsqueeze 0-d inputs of ``Concat`` (in place); returns how many were wrapped."""
    import onnx
    from onnx import helper

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    rank = {}
    for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if v.type.tensor_type.HasField("shape"):
            rank[v.name] = len(v.type.tensor_type.shape.dim)
    for t in model.graph.initializer:
        rank[t.name] = len(t.dims)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 11)
    nodes, count = [], 0
    for node in model.graph.node:
        if node.op_type == "Concat" and any(rank.get(i) == 0 for i in node.input):
            for k, name in enumerate(node.input):
                if rank.get(name) != 0:
                    continue
                out = f"{name}__porter_unsqueezed_{count}"
                if opset >= 13:
                    axes = f"{out}__axes"
                    nodes.append(helper.make_node(
                        "Constant", [], [axes],
                        value=helper.make_tensor(axes, onnx.TensorProto.INT64, [1], [0])))
                    nodes.append(helper.make_node("Unsqueeze", [name, axes], [out]))
                else:
                    nodes.append(helper.make_node("Unsqueeze", [name], [out], axes=[0]))
                node.input[k] = out
                count += 1
        nodes.append(node)
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return count


def _child_main(argv: list[str]) -> int:
    model, params, out, opset = argv[1], argv[2], argv[3], int(argv[4])
    import warnings

    warnings.filterwarnings("ignore")
    import paddle2onnx

    data = paddle2onnx.export(model, params, save_file=None, opset_version=opset,
                              auto_upgrade_opset=True, enable_onnx_checker=True,
                              enable_optimize=True)
    if not data:
        print("error: paddle2onnx returned no model", file=sys.stderr)
        return 1
    Path(out).write_bytes(data)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(_child_main(sys.argv))
    except Exception as exc:  # one line for the parent
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
