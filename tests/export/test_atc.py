"""The ATC table reader, the audit and the atc command line (fast, hand-built graphs)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from onnx import TensorProto, helper, numpy_helper

from porter.errors import PorterError
from porter.export.atc import atc_audit, atc_command, load_atc_table

TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "atc_onnx_ops.tsv"


def _table(tmp_path, rows):
    p = tmp_path / "t.tsv"
    with open(p, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t")
        w.writerow(["repo", "commit", "file", "op", "opset"])
        for op, v in rows:
            w.writerow(["hicann/ops-nn", "abc123", f"{op.lower()}_onnx_plugin.cpp", op, v])
    return load_atc_table(str(p))


def _model(ops, opset):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    nodes, prev = [], "x"
    for i, op in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"t{i}"], name=f"/m/block{i}/{op}"))
        prev = f"t{i}"
    y = helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 4])
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                             opset_imports=[helper.make_opsetid("", opset)])


def test_table_reads_pairs_and_judges_by_exact_opset(tmp_path):
    t = _table(tmp_path, [("Relu", 11), ("Relu", 13), ("Sigmoid", 13)])
    assert t.accepts("Relu", 13) and not t.accepts("Relu", 12) and t.accepts("Constant", 5)
    assert t.opsets("Relu") == [11, 13] and t.commits == ("hicann/ops-nn@abc123",)


def test_audit_names_every_refused_node_at_once(tmp_path):
    t = _table(tmp_path, [("Relu", 13)])
    audit = atc_audit(_model(["Relu", "Sigmoid", "Tanh"], 13), t,
                      module_of=lambda n: n.split("/")[2])
    assert not audit.passed
    assert [(r["op"], r["node"], r["module"]) for r in audit.refused] == [
        ("Sigmoid", "/m/block1/Sigmoid", "block1"), ("Tanh", "/m/block2/Tanh", "block2")]
    assert len(audit.problems()) == 2 and "opset 13" in audit.problems()[0]
    assert audit.to_dict()["ops"]["Relu"] == {"count": 1, "accepted": True, "table_opsets": [13]}


def test_audit_flags_float64_left_in_the_graph(tmp_path):
    t = _table(tmp_path, [("Relu", 13)])
    m = _model(["Relu"], 13)
    m.graph.initializer.append(numpy_helper.from_array(__import__("numpy").zeros(2), "d"))
    audit = atc_audit(m, t)
    assert audit.float64 == ["initializer d"] and not audit.passed


def test_malformed_table_is_a_clear_error(tmp_path):
    p = tmp_path / "bad.tsv"
    p.write_text("a\tb\n1\t2\n")
    with pytest.raises(PorterError, match="not an ATC operator table"):
        load_atc_table(str(p))
    with pytest.raises(PorterError, match="not found"):
        load_atc_table(str(tmp_path / "missing.tsv"))


def test_atc_command_with_gears_and_keep_dtype():
    cmd = atc_command("model.onnx", [("input", [1, 3, -1, -1])], output="modnet",
                      soc_version="Ascend910B1", gears=[(512, 512), (384, 640)],
                      precision_mode="allow_fp32_to_fp16", keep_dtype="keep.cfg")
    assert cmd == ('atc --framework=5 --model=model.onnx --output=modnet --input_format=NCHW '
                   '--input_shape="input:1,3,-1,-1" --dynamic_image_size="512,512;384,640" '
                   '--soc_version=Ascend910B1 --precision_mode=allow_fp32_to_fp16 '
                   '--keep_dtype=keep.cfg')


def test_shared_table_has_the_documented_size():
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} not available (../shared is missing; CI has it)")
    t = load_atc_table(str(TABLE))
    with open(TABLE, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert len(rows) == 2466  # as its README says; some pairs are registered in two repos
    assert t.pairs == {(r["op"], int(r["opset"])) for r in rows}
    assert t.max_opset == 18 and t.opsets("GridSample") == [11, 16, 17, 18]


def test_shipped_table_loads_without_shared(monkeypatch):
    """porter's own table: no ../shared, no environment variable needed."""
    monkeypatch.delenv("PORTER_ATC_OPS", raising=False)
    load_atc_table.cache_clear()
    t = load_atc_table()
    assert t.source == "porter/export/data/atc_onnx_ops.tsv"
    assert t.accepts("Conv", 11) and not t.accepts("RNN", 11) and t.max_opset == 18
    assert len(t.commits) == 3 and all("@" in c and len(c.split("@")[1]) == 12 for c in t.commits)


def test_environment_overrides_the_shipped_table(tmp_path, monkeypatch):
    p = tmp_path / "mine.tsv"
    p.write_text("op\topset\nRelu\t13\n")
    monkeypatch.setenv("PORTER_ATC_OPS", str(p))
    load_atc_table.cache_clear()
    try:
        t = load_atc_table()
        assert t.source == str(p) and t.pairs == {("Relu", 13)} and not t.accepts("Conv", 11)
        monkeypatch.setenv("PORTER_ATC_OPS", str(tmp_path / "gone.tsv"))
        load_atc_table.cache_clear()
        with pytest.raises(PorterError, match="gone.tsv: ATC operator table not found"):
            load_atc_table()
    finally:
        load_atc_table.cache_clear()


def test_shipped_table_equals_the_reference():
    """The package file is exactly what scripts/build_atc_table.py makes of the reference, and
    holds the same (op, opset) pairs and commits."""
    if not TABLE.is_file():
        pytest.skip(f"{TABLE} not available (../shared is missing; CI has it)")
    import importlib.util

    script = Path(__file__).resolve().parents[2] / "scripts" / "build_atc_table.py"
    spec = importlib.util.spec_from_file_location("build_atc_table", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    shipped = Path(__file__).resolve().parents[2] / "porter" / "export" / "data" / TABLE.name
    assert shipped.read_text() == mod.render(TABLE.read_text())
    ref, ours = load_atc_table(str(TABLE)), load_atc_table(str(shipped))
    assert ours.pairs == ref.pairs and ours.commits == ref.commits


def test_atc_options_defaults_and_valid_values():
    from porter.export.atc import PRECISION_MODES, check_atc_options

    assert check_atc_options(None, None) == ("Ascend310P3", "allow_fp32_to_fp16")
    assert check_atc_options("Ascend910B1", "force_fp32") == ("Ascend910B1", "force_fp32")
    assert check_atc_options("Ascend910_9391", "must_keep_origin_dtype")[0] == "Ascend910_9391"
    with pytest.raises(PorterError, match=r"--soc-version '910B' is not an Ascend chip name "
                                          r"\(AscendNNN\.\.\., e\.g\. Ascend310P3"):
        check_atc_options("910B", None)
    with pytest.raises(PorterError, match="--precision-mode must be one of "
                                          + ", ".join(PRECISION_MODES) + ", not 'fp16'"):
        check_atc_options(None, "fp16")
