"""Write a fixture catalog for ``porter zoo build``: small ONNX models in a local wheel.

Usage: ``python scripts/build_zoo_fixture_catalog.py DIR [--models N] [--size S]``

Writes ``DIR/wheels/porter_zoo_fixtures-1.0-py3-none-any.whl`` (the models, fetched from it by
pip exactly as the project catalog's ``pypi-wheel`` sources are, offline with
``--find-links DIR/wheels``), ``DIR/catalog.toml`` and ``DIR/crash_port.py``. The catalog has
N plain entries (``tiny_0`` …, random-weight Conv/ReLU/Conv/ReLU/Conv/Sigmoid nets built with
onnx.helper), one that verifies on an NPU (``tiny_npu``: asks Ray for the NPU resource), and two
made to fail for real reasons:

- ``crash``: its graph is ported by a plugin (``crash_port.py``, registered through the
  catalog's ``plugins`` field) whose converter reads address 0 through ctypes: the converting
  process dies of SIGSEGV;
- ``tight``: a legitimate model with ``tolerance = 1e-12``, below float32 rounding between
  onnxruntime and torch, so parity fails.

Tests import ``make_catalog``; ``scripts/bench_zoo_build.py`` uses bigger ``size``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

PACKAGE, VERSION = "porter-zoo-fixtures", "1.0"
_MOD = PACKAGE.replace("-", "_")

CRASH_PORT = '''"""A port whose converter crashes its process natively (fixture for `porter zoo build`)."""
import ctypes

from porter.graphs import GraphPort, register_port


def _segfault(source, **options):
    ctypes.string_at(0)  # reads address 0: SIGSEGV, no Python exception


register_port(GraphPort(name="fixture_segfault", formats=("onnx",), graph="fixture:None",
                        matches=lambda source: False, port=_segfault, cases=None,
                        reference=None, example_inputs=None))
'''


# Plugins for the retry rule: each import is one attempt, counted in a file beside the plugin.
FLAKY_PORT = '''"""Fails its first import with OSError (a flaky mount), then works (fixture)."""
from pathlib import Path

log = Path(__file__).with_name("flaky.attempts")
attempts = int(log.read_text()) + 1 if log.exists() else 1
log.write_text(str(attempts))
if attempts == 1:
    raise OSError(5, "input/output error on first read (fixture)")
'''

REFUSING_PORT = '''"""Always refuses with a PorterError, a deterministic failure (fixture)."""
from pathlib import Path

from porter.errors import MappingError

log = Path(__file__).with_name("refusing.attempts")
log.write_text(str(int(log.read_text()) + 1 if log.exists() else 1))
raise MappingError("refusing fixture: nothing maps (deterministic)")
'''

HANGING_PORT = '''"""Hangs on import, like a converter stuck waiting (fixture for timeout_s)."""
import time

time.sleep(300)
'''


def make_retry_catalog(folder: Path, size: int = 32) -> Path:
    """A catalog for the retry rule: ``flaky`` (OSError once, max_retries=1), ``refusing`` (a
    PorterError every time, max_retries=2) and ``hanging`` (sleeps; timeout_s = 3)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flaky_port.py").write_text(FLAKY_PORT)
    (folder / "refusing_port.py").write_text(REFUSING_PORT)
    (folder / "hanging_port.py").write_text(HANGING_PORT)
    members = {"flaky.onnx": tiny_onnx(400, size), "refusing.onnx": tiny_onnx(500, size),
               "hanging.onnx": tiny_onnx(600, size)}
    text = (_entry("flaky", members["flaky.onnx"], 'plugins = ["flaky_port.py"]\nmax_retries = 1')
            + _entry("refusing", members["refusing.onnx"],
                     'plugins = ["refusing_port.py"]\nmax_retries = 2')
            + _entry("hanging", members["hanging.onnx"],
                     'plugins = ["hanging_port.py"]\ntimeout_s = 3'))
    (folder / "wheels").mkdir(exist_ok=True)
    _wheel(folder / "wheels" / f"{_MOD}-{VERSION}-py3-none-any.whl", members)
    (folder / "catalog.toml").write_text(text)
    return folder / "catalog.toml"


def tiny_onnx(seed: int, size: int = 32, channels: int = 8) -> bytes:
    """Random-weight Conv3x3/ReLU/Conv3x3/ReLU/Conv1x1/Sigmoid on 1x3xSxS, ONNX opset 17."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    init = [numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32),
                                    "w1"),
            numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b1"),
            numpy_helper.from_array(
                (rng.standard_normal((channels, channels, 3, 3)) / channels).astype(np.float32),
                "w2"),
            numpy_helper.from_array(rng.standard_normal((1, channels, 1, 1)).astype(np.float32),
                                    "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["h2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["h3"]),
             helper.make_node("Sigmoid", ["h3"], ["y"])]
    graph = helper.make_graph(
        nodes, f"tiny_{seed}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, size, size])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(f"{_MOD}/{name}", data)
        info = f"{_MOD}-{VERSION}.dist-info"
        zf.writestr(f"{info}/METADATA",
                    f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {VERSION}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


def _entry(name: str, data: bytes, build: str = "") -> str:
    return (f'[{name}]\ndescription = "porter zoo build fixture {name}"\nlicence = "MIT"\n'
            f'file = "{name}.onnx"\nsha256 = "{hashlib.sha256(data).hexdigest()}"\n'
            f'[{name}.source]\nkind = "pypi-wheel"\npackage = "{PACKAGE}"\n'
            f'version = "{VERSION}"\nmember = "{_MOD}/{name}.onnx"\n'
            + (f"[{name}.build]\n{build}\n" if build else "") + "\n")


def make_catalog(folder: Path, models: int = 4, size: int = 32, failures: bool = True,
                 npu: bool = True) -> Path:
    """Write the wheel, plugin and catalog under ``folder``; returns the catalog's path."""
    folder.mkdir(parents=True, exist_ok=True)
    members: dict[str, bytes] = {}
    text = io.StringIO()
    text.write("# fixture catalog written by scripts/build_zoo_fixture_catalog.py\n\n")
    for i in range(models):
        members[f"tiny_{i}.onnx"] = data = tiny_onnx(i, size)
        text.write(_entry(f"tiny_{i}", data))
    if npu:
        members["tiny_npu.onnx"] = data = tiny_onnx(100, size)
        text.write(_entry("tiny_npu", data, 'verify = "npu"'))
    if failures:
        (folder / "crash_port.py").write_text(CRASH_PORT)
        members["crash.onnx"] = data = tiny_onnx(200, size)
        text.write(_entry("crash", data, 'graph = "fixture_segfault"\n'
                                         'plugins = ["crash_port.py"]\nmax_retries = 0'))
        members["tight.onnx"] = data = tiny_onnx(300, size)
        text.write(_entry("tight", data, "tolerance = 1e-12"))
    wheels = folder / "wheels"
    wheels.mkdir(exist_ok=True)
    _wheel(wheels / f"{_MOD}-{VERSION}-py3-none-any.whl", members)
    catalog = folder / "catalog.toml"
    catalog.write_text(text.getvalue())
    return catalog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--models", type=int, default=4)
    ap.add_argument("--size", type=int, default=32)
    args = ap.parse_args()
    print(make_catalog(args.folder, args.models, args.size))


if __name__ == "__main__":
    main()
