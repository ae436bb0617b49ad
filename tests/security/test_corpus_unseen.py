"""A second hostile corpus (issue 10: "another crafted corpus the tests have never seen").

Cases the first corpus did not have, across formats: ONNX external data hidden in local
functions, sparse initializers, tensor-list attributes, Loop bodies and training info;
self-recursive functions; attacker-sized dims; pickles that reach code through the opcodes
the first corpus did not use (INST, OBJ, NEWOBJ_EX, STACK_GLOBAL with odd modules, EXT1/2/4,
persistent ids); safetensors headers with overlapping ranges, duplicate keys or giant lengths;
torch zips with traversal names, missing storages and compressed bombs; Paddle programs with
``save`` / ``load`` / ``py_func`` ops and path-like variable names. Each run ends with one
``porter: error:`` line (exit 2), and canary / secret files in the working directory (outside
the model folder) prove nothing ran and nothing outside was read.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.security import tfwire
from tests.security.conftest import assert_one_line_error, open_all, porter_cli

SECRET = np.array([1.25e-3, 7.5e4, -3.0e2, 4.2e-1], "float32")  # distinctive bytes


def _no_trace(cwd: Path, proc) -> None:
    """Nothing ran (no canary) and nothing of the secret came out."""
    assert not (cwd / "CANARY").exists()
    assert "top secret" not in proc.stdout + proc.stderr
    out = cwd / "out"
    if out.exists():  # a refused conversion leaves nothing behind
        assert not any(out.iterdir())


@pytest.fixture
def hostile(arena):
    model, cwd = arena
    (cwd / "secret").write_bytes(SECRET.tobytes())
    (cwd / "secret.txt").write_text("top secret")
    return model, cwd


def _convert(path: Path, cwd: Path, verify: str = "cpu"):
    return porter_cli("convert", str(path), "--verify", verify, "--out", str(cwd / "out"),
                      "-q", cwd=cwd, timeout=180)


# ------------------------------------------------------------------------------------ ONNX

def _ext(name: str, location: str, dims=(4,)) -> TensorProto:
    t = helper.make_tensor(name, TensorProto.FLOAT, list(dims), np.zeros(int(np.prod(dims)),
                                                                         "float32"))
    t.ClearField("float_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _vi(name: str, dims=(4,), dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, list(dims))


def _model(nodes, inputs=None, outputs=None, inits=(), functions=(), opset=17, **graph_kw):
    graph = helper.make_graph(nodes, "g", inputs if inputs is not None else [_vi("x")],
                              outputs if outputs is not None else [_vi("y")], list(inits),
                              **graph_kw)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("local", 1)]
                                                 if functions else [])
    m = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    m.ir_version = 8
    return m


def _function_with_external(location: str):
    const = helper.make_node("Constant", [], ["c"], value=_ext("c", location))
    add = helper.make_node("Add", ["a", "c"], ["b"])
    return helper.make_function("local", "F", ["a"], ["b"], [const, add],
                                [helper.make_opsetid("", 17)])


def _loop_body_with_external(location: str):
    body = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=_ext("c", location)),
         helper.make_node("Identity", ["cond"], ["cond_out"]),
         helper.make_node("Add", ["v", "c"], ["v_out"])], "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond", [], TensorProto.BOOL), _vi("v")],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("v_out")])
    return body


def _onnx_cases(location: str) -> dict[str, onnx.ModelProto]:
    trip = helper.make_tensor("trip", TensorProto.INT64, [], [1])
    cond = helper.make_tensor("cond", TensorProto.BOOL, [], [True])
    sparse = helper.make_sparse_tensor(_ext("sv", location),
                                       helper.make_tensor("si", TensorProto.INT64, [4],
                                                          [0, 1, 2, 3]), [4])
    training = onnx.TrainingInfoProto()
    training.initialization.CopyFrom(helper.make_graph(
        [helper.make_node("Constant", [], ["w"], value=_ext("w", location))], "init", [],
        [_vi("w")]))
    m_train = _model([helper.make_node("Identity", ["x"], ["y"])])
    m_train.training_info.append(training)
    return {
        "function_constant": _model([helper.make_node("F", ["x"], ["y"], domain="local")],
                                    functions=[_function_with_external(location)]),
        "sparse_initializer": _model([helper.make_node("Identity", ["x"], ["y"])],
                                     sparse_initializer=[sparse]),
        "tensors_attribute": _model([helper.make_node("Identity", ["x"], ["y"]),
                                     helper.make_node("Custom", [], ["z"], domain="evil",
                                                      blobs=[_ext("b", location)])]),
        "loop_body_constant": _model(
            [helper.make_node("Loop", ["trip", "cond", "x"], ["y"],
                              body=_loop_body_with_external(location))], inits=[trip, cond]),
        "training_info": m_train,
    }


@pytest.mark.parametrize("case", ["function_constant", "sparse_initializer",
                                  "tensors_attribute", "loop_body_constant", "training_info"])
@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_onnx_external_data_in_hidden_places(hostile, case: str, where: str) -> None:
    model, cwd = hostile
    location = "../cwd/secret" if where == "relative" else str(cwd / "secret")
    path = model / "m.onnx"
    onnx.save(_onnx_cases(location)[case], str(path))
    proc = _convert(path, cwd, "none")
    assert_one_line_error(proc, "external")
    _no_trace(cwd, proc)
    assert SECRET.tobytes() not in b"".join(p.read_bytes() for p in cwd.rglob("*.safetensors"))


def test_onnx_self_recursive_local_function(hostile) -> None:
    model, cwd = hostile
    f = helper.make_function("local", "F", ["a"], ["b"],
                             [helper.make_node("F", ["a"], ["b"], domain="local")],
                             [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])
    path = model / "m.onnx"
    onnx.save(_model([helper.make_node("F", ["x"], ["y"], domain="local")], functions=[f]),
              str(path))
    proc = _convert(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


def test_onnx_mutually_recursive_local_functions(hostile) -> None:
    model, cwd = hostile
    ops = [helper.make_opsetid("", 17), helper.make_opsetid("local", 1)]
    f = helper.make_function("local", "F", ["a"], ["b"],
                             [helper.make_node("G", ["a"], ["b"], domain="local")], ops)
    g = helper.make_function("local", "G", ["a"], ["b"],
                             [helper.make_node("F", ["a"], ["b"], domain="local")], ops)
    path = model / "m.onnx"
    onnx.save(_model([helper.make_node("F", ["x"], ["y"], domain="local")],
                     functions=[f, g]), str(path))
    proc = _convert(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


def test_onnx_input_dims_of_attacker_size(hostile) -> None:
    """A graph input declared [1, 2**40]: porter must not allocate the test case."""
    model, cwd = hostile
    path = model / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [1, 2 ** 40])],
                     [_vi("y", [1, 2 ** 40])]), str(path))
    proc = _convert(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


def test_onnx_huge_dims_in_value_info_and_sparse_dims(hostile) -> None:
    model, cwd = hostile
    sparse = helper.make_sparse_tensor(
        helper.make_tensor("sv", TensorProto.FLOAT, [1], [1.0]),
        helper.make_tensor("si", TensorProto.INT64, [1], [0]), [2 ** 31, 2 ** 31])
    path = model / "m.onnx"
    onnx.save(_model([helper.make_node("Relu", ["x"], ["y"])], sparse_initializer=[sparse],
                     value_info=[_vi("y", [2 ** 62])]), str(path))
    proc = _convert(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


def test_onnx_node_cycle(hostile) -> None:
    model, cwd = hostile
    path = model / "m.onnx"
    onnx.save(_model([helper.make_node("Add", ["x", "b"], ["a"]),
                      helper.make_node("Relu", ["a"], ["b"]),
                      helper.make_node("Identity", ["b"], ["y"])]), str(path))
    proc = _convert(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


def test_onnx_external_location_with_nul_byte_and_folder(hostile) -> None:
    model, cwd = hostile
    (model / "w.bin").write_bytes(bytes(16))
    for location in ("w.bin\x00../../cwd/secret", "."):
        t = _ext("w", location)
        path = model / "m.onnx"
        onnx.save(_model([helper.make_node("Add", ["x", "w"], ["y"])], inits=[t]), str(path))
        proc = open_all(path, cwd)
        assert_one_line_error(proc)
        _no_trace(cwd, proc)


# --------------------------------------------------------------------------------- pickles

def _pdparams(model: Path, payload: bytes) -> Path:
    path = model / "evil.pdparams"
    path.write_bytes(payload)
    return path


def _touch(cwd: Path) -> bytes:
    return f"touch {cwd / 'CANARY'}".encode()


def _pickle_cases(cwd: Path) -> dict[str, bytes]:
    cmd = _touch(cwd)
    b = lambda x: bytes([len(x)]) + x  # noqa: E731 - SHORT_BINUNICODE length prefix
    return {
        # protocol 0: INST pushes os.system(cmd) from a MARK
        "inst": b"(S'" + cmd + b"'\nios\nsystem\n.",
        # OBJ: MARK, the class (GLOBAL), its args, then OBJ builds cls(*args)
        "obj": b"(cos\nsystem\nS'" + cmd + b"'\no.",
        # protocol 4: STACK_GLOBAL of modules the first corpus never used
        "stack_global_subprocess": (b"\x80\x04\x8c" + b(b"subprocess") + b"\x8c" + b(b"getoutput")
                                    + b"\x93\x8c" + b(cmd) + b"\x85R."),
        "stack_global_builtins_exec": (b"\x80\x04\x8c" + b(b"builtins") + b"\x8c" + b(b"exec")
                                       + b"\x93\x8c" + b(b"import os;os.system('" + cmd + b"')")
                                       + b"\x85R."),
        "stack_global_dotted": (b"\x80\x04\x8c" + b(b"numpy") + b"\x8c" + b(b"f2py.os.system")
                                + b"\x93\x8c" + b(cmd) + b"\x85R."),
        "stack_global_torch_hub": (b"\x80\x04\x8c" + b(b"torch.hub") + b"\x8c" + b(b"load")
                                   + b"\x93\x8c" + b(b"x") + b"\x85R."),
        # NEWOBJ_EX of a class that runs code in __new__ / its args
        "newobj_ex": (b"\x80\x04\x8c" + b(b"subprocess") + b"\x8c" + b(b"Popen") + b"\x93"
                      + b"\x8c" + b(b"sh") + b"\x8c" + b(b"-c") + b"\x8c" + b(cmd)
                      + b"\x87\x85}\x92."),
        # copyreg extension registry: EXT1 / EXT2 / EXT4 name a global by code
        "ext1": b"\x80\x02\x82\x01\x8c" + b(cmd) + b"\x85R.",
        "ext2": b"\x80\x02\x83\x01\x00\x8c" + b(cmd) + b"\x85R.",
        "ext4": b"\x80\x02\x84\x01\x00\x00\x00\x8c" + b(cmd) + b"\x85R.",
        # a persistent id in a plain .pdparams pickle (torch's storage hook, out of place)
        "persistent_id": b"\x80\x02}q\x00X\x01\x00\x00\x00wq\x01X\x03\x00\x00\x00abcQs.",
        # __reduce_ex__ style: copyreg.__newobj__ / _reconstructor reaching os.system
        "copyreg_reconstructor": (b"\x80\x02ccopyreg\n_reconstructor\ncos\n_wrap_close\n"
                                  b"c__builtin__\nobject\nN\x87R."),
        # memo read before it was written, and a BUILD on a global function
        "memo_get_unset": b"\x80\x02}q\x00X\x01\x00\x00\x00wh\x07s.",
        "build_on_global": b"\x80\x02cos\nsystem\n}b.",
    }


@pytest.mark.parametrize("case", list(_pickle_cases(Path("/x"))))
def test_pickle_opcodes_never_reach_code(hostile, case: str) -> None:
    model, cwd = hostile
    path = _pdparams(model, _pickle_cases(cwd)[case])
    proc = open_all(path, cwd)
    assert proc.returncode not in (-11, -6)  # no interpreter crash
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


# ----------------------------------------------------------------------------- safetensors

def _safetensors(header: bytes | dict, data: bytes, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


_F4 = {"dtype": "F32", "shape": [4]}


@pytest.mark.parametrize("case", ["overlap", "duplicate_keys", "giant_length", "reversed",
                                  "gap", "huge_shape"])
def test_safetensors_headers(hostile, case: str) -> None:
    model, cwd = hostile
    data = SECRET.tobytes() * 2
    blob = {
        "overlap": _safetensors({"a": {**_F4, "data_offsets": [0, 16]},
                                 "b": {**_F4, "data_offsets": [8, 24]}}, data[:24]),
        "duplicate_keys": _safetensors(
            b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
            b'"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}', data),
        "giant_length": _safetensors(b"{}", b"", length=2 ** 63 - 1),
        "reversed": _safetensors({"a": {**_F4, "data_offsets": [16, 0]}}, data),
        "gap": _safetensors({"a": {**_F4, "data_offsets": [16, 32]}}, data),
        "huge_shape": _safetensors({"a": {"dtype": "F32", "shape": [2 ** 31, 2 ** 31],
                                          "data_offsets": [0, 16]}}, data[:16]),
    }[case]
    path = model / "m.safetensors"
    path.write_bytes(blob)
    proc = open_all(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


# ------------------------------------------------------------------------------- torch zip

def _torch_zip(path: Path, entries: dict[str, bytes], compress: set[str] = frozenset()) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data,
                        zipfile.ZIP_DEFLATED if name in compress else zipfile.ZIP_STORED)


def _state_pickle(key: str = "0", numel: int = 4) -> bytes:
    """data.pkl of ``{"w": tensor}`` as torch writes it (storage by persistent id)."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.arange(numel, dtype=torch.float32)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
        name = next(n for n in zf.namelist() if n.endswith("data.pkl"))
        pkl = zf.read(name)
    return pkl.replace(b"X\x01\x00\x00\x000", b"X" + struct.pack("<I", len(key)) + key.encode())


@pytest.mark.parametrize("case", ["traversal", "missing_storage", "zip_bomb", "duplicate"])
def test_torch_zip_archives(hostile, case: str) -> None:
    model, cwd = hostile
    path = model / "m.pt"
    pkl = _state_pickle()
    if case == "traversal":
        _torch_zip(path, {"archive/data.pkl": _state_pickle("../../../cwd/CANARY"),
                          "archive/version": b"3\n",
                          "archive/data/../../../cwd/CANARY": SECRET.tobytes()})
    elif case == "missing_storage":
        _torch_zip(path, {"archive/data.pkl": _state_pickle("7"), "archive/version": b"3\n",
                          "archive/data/0": SECRET.tobytes()})
    elif case == "zip_bomb":  # 1 GiB of zeros deflated to ~1 MB, claimed as the storage
        _torch_zip(path, {"archive/data.pkl": _state_pickle("0", 1 << 28),
                          "archive/version": b"3\n", "archive/data/0": bytes(1 << 30)},
                   compress={"archive/data/0"})
    else:
        _torch_zip(path, {"archive/data.pkl": pkl, "archive/version": b"3\n",
                          "archive/data/0": SECRET.tobytes()})
        with zipfile.ZipFile(path, "a") as zf:  # a second data.pkl: which one is read?
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zf.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nX\x01\x00\x00\x00x\x85R.")
    proc = open_all(path, cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


# ---------------------------------------------------------------------------------- Paddle

def _var(name: str, persistable: bool = True, dims=(4,)) -> bytes:
    lod = tfwire.field(1, tfwire.field(1, 5) + b"".join(tfwire.field(2, d) for d in dims))
    vtype = tfwire.field(1, 7) + tfwire.field(3, lod)  # LOD_TENSOR
    return tfwire.field(1, name.encode()) + tfwire.field(2, vtype) + tfwire.field(3, int(
        persistable))


def _attr_str(name: str, value: str) -> bytes:
    return tfwire.field(1, name.encode()) + tfwire.field(2, 2) + tfwire.field(5, value.encode())


def _op(kind: str, inputs: dict, outputs: dict, attrs: bytes = b"") -> bytes:
    def slots(d: dict, num: int) -> bytes:
        return b"".join(tfwire.field(num, tfwire.field(1, k.encode()) + b"".join(
            tfwire.field(2, a.encode()) for a in v)) for k, v in d.items())
    return (slots(inputs, 1) + slots(outputs, 2) + tfwire.field(3, kind.encode())
            + (tfwire.field(4, attrs) if attrs else b""))


def _program(vars_: list[bytes], ops: list[bytes]) -> bytes:
    block = (tfwire.field(1, 0) + tfwire.field(2, 0) + b"".join(tfwire.field(3, v) for v in vars_)
             + b"".join(tfwire.field(4, o) for o in ops))
    return tfwire.field(1, block)


def _params(names: list[str]) -> bytes:
    """A combined .pdiparams of float32 [4] tensors, one per name (sorted order)."""
    desc = tfwire.field(1, 5) + tfwire.field(2, 4)
    one = (struct.pack("<I", 0) + struct.pack("<Q", 0) + struct.pack("<I", 0)
           + struct.pack("<i", len(desc)) + desc + SECRET.tobytes())
    return one * len(names)


@pytest.mark.parametrize("case", ["save", "load", "py_func", "save_combine"])
def test_paddle_program_io_ops(hostile, case: str) -> None:
    model, cwd = hostile
    target = str(cwd / ("CANARY" if case.startswith("save") else "secret"))
    io_op = {
        "save": _op("save", {"X": ["w"]}, {}, _attr_str("file_path", target)),
        "save_combine": _op("save_combine", {"X": ["w"]}, {}, _attr_str("file_path", target)),
        "load": _op("load", {}, {"Out": ["w2"]}, _attr_str("file_path", target)),
        "py_func": _op("py_func", {"X": ["x"]}, {"Out": ["w2"]}),
    }[case]
    ops = [_op("feed", {"X": ["feed"]}, {"Out": ["x"]}), io_op,
           _op("elementwise_add", {"X": ["x"], "Y": ["w"]}, {"Out": ["y"]}),
           _op("fetch", {"X": ["y"]}, {"Out": ["fetch"]})]
    vars_ = [_var("x", False), _var("w"), _var("w2", False), _var("y", False)]
    (model / "inference.pdmodel").write_bytes(_program(vars_, ops))
    (model / "inference.pdiparams").write_bytes(_params(["w"]))
    proc = _convert(model, cwd)
    assert_one_line_error(proc, f"op '{case}'")
    _no_trace(cwd, proc)


@pytest.mark.parametrize("name", ["/etc/passwd", "../../cwd/secret.txt", "a/../../b"])
def test_paddle_path_like_persistable_names_stay_names(hostile, name: str) -> None:
    """A persistable variable named like a path: porter reads the combined .pdiparams only,
    never a file named after a variable (Paddle's separate-params layout)."""
    model, cwd = hostile
    ops = [_op("feed", {"X": ["feed"]}, {"Out": ["x"]}),
           _op("elementwise_add", {"X": ["x"], "Y": [name]}, {"Out": ["y"]}),
           _op("fetch", {"X": ["y"]}, {"Out": ["fetch"]})]
    (model / "inference.pdmodel").write_bytes(_program([_var("x", False), _var(name),
                                                         _var("y", False)], ops))
    (model / "inference.pdiparams").write_bytes(b"")  # nothing combined: a separate layout
    proc = open_all(model / "inference.pdmodel", cwd)
    assert_one_line_error(proc)
    _no_trace(cwd, proc)


# ------------------------------------------------------------------------------ TensorFlow

_TF_BUILD = r'''
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import tensorflow as tf
v1 = tf.compat.v1
v1.disable_eager_execution()
out, canary, secret = sys.argv[1:4]

def save(name, make, fed=True):
    g = tf.Graph()
    with g.as_default():
        x = v1.placeholder(tf.float32, [1, 4], name="x")
        y = tf.identity(make(x), name="y")
    with open(os.path.join(out, name + ".pb"), "wb") as fh:
        fh.write(g.as_graph_def().SerializeToString())

@tf.function
def writes(x):
    tf.io.write_file(canary, "pwned")
    return x * 2.0

@tf.function(autograph=False)
def reads(x):
    return x + tf.cast(tf.strings.length(tf.io.read_file(secret)), tf.float32)

@tf.function
def prints(x):
    tf.print("pwned", output_stream="file://" + canary)
    return x + 1.0

@tf.function
def asserts(x):
    tf.debugging.Assert(tf.reduce_all(x > -1e9), [tf.io.read_file(secret)])
    return x

save("stateful_call_write_file", lambda x: writes(x))
save("partitioned_call_read_file", lambda x: reads(x))
save("function_print_v2", lambda x: prints(x))
save("function_assert_reads", lambda x: asserts(x))
save("while_body_writes", lambda x: tf.while_loop(
    lambda i, v: i < 1, lambda i, v: (i + 1, writes(v)), [tf.constant(0), x])[1])
def dataset(x):
    it = v1.data.make_one_shot_iterator(tf.data.TextLineDataset(secret))
    return x + tf.cast(tf.strings.length(it.get_next()), tf.float32)
save("dataset_reads", dataset)
save("immutable_const", lambda x: x + tf.raw_ops.ImmutableConst(
    dtype=tf.float32, shape=[1, 4], memory_region_name=secret))
def colocated(x):
    w = tf.io.write_file(canary, "pwned")
    with tf.compat.v1.colocate_with(w):
        return tf.identity(x * 3.0)
save("colocated_with_write_file", colocated)
'''

TF_CASES = ["stateful_call_write_file", "partitioned_call_read_file", "function_print_v2",
            "function_assert_reads", "while_body_writes", "dataset_reads", "immutable_const"]


@pytest.fixture(scope="module")
def tf_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.security.conftest import run_capped

    root = tmp_path_factory.mktemp("tfcorpus")
    model, cwd = root / "model", root / "cwd"
    model.mkdir()
    cwd.mkdir()
    proc = run_capped(["-c", _TF_BUILD, str(model), str(cwd / "CANARY"),
                       str(cwd / "secret.txt")], cwd, timeout=300, cap=None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (cwd / "secret.txt").write_text("top secret")  # after building: nothing ran then either
    return model, cwd


@pytest.mark.slow
@pytest.mark.parametrize("name", TF_CASES)
def test_tf_functions_datasets_and_mapped_consts(tf_graphs, name: str) -> None:
    model, cwd = tf_graphs
    out = cwd / f"out-{name}"
    proc = porter_cli("convert", str(model / f"{name}.pb"), "--verify", "cpu", "--out",
                      str(out), "-q", cwd=cwd, timeout=300, cap=None)
    line = assert_one_line_error(proc, "allow-list")
    assert "node" in line
    assert not (cwd / "CANARY").exists() and not out.exists()
    assert "top secret" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_tf_colocation_with_a_write_never_runs_it(tf_graphs) -> None:
    """``_class: loc:@WriteFile`` on the output: colocation is placement, not a dependency;
    the WriteFile node is unreachable and never runs (converting may succeed)."""
    model, cwd = tf_graphs
    out = cwd / "out-colocated"
    proc = porter_cli("convert", str(model / "colocated_with_write_file.pb"), "--verify", "cpu",
                      "--out", str(out), "-q", cwd=cwd, timeout=300, cap=None)
    if proc.returncode != 0:
        assert_one_line_error(proc)
    assert not (cwd / "CANARY").exists()
