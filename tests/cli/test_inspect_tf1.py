"""``porter inspect`` on every TF1 form: frozen GraphDef, checkpoint (prefix, .index, folder),
MetaGraph; the op histogram must equal what TensorFlow itself reads from the same file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from porter.cli.inspect_cmd import op_histogram_lines
from porter.cli.main import main


def _inspect_json(capsys, path) -> dict:
    assert main(["inspect", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _tf_ops(graph_summary) -> dict[str, int]:
    return dict(Counter(op for _, op, _, _ in graph_summary))


@pytest.mark.parametrize("form", ["prefix", "index", "meta", "folder"])
def test_inspect_checkpoint_forms(capsys, tf1_fixtures, form):
    _, exp = tf1_fixtures
    prefix = exp["mixed"]["prefix"]
    path = {"prefix": prefix, "index": f"{prefix}.index", "meta": f"{prefix}.meta",
            "folder": str(Path(prefix).parent)}[form]
    info = _inspect_json(capsys, path)
    assert info["format"] == ("tf1-metagraph" if form == "meta" else "tf1-checkpoint")
    assert info["ops"] == _tf_ops(exp["mixed"]["graph"])
    assert {t["name"] for t in info["tensors"]} == set(exp["mixed"]["tensors"])
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert f"{sum(info['ops'].values())} nodes, {len(info['ops'])} op types" in text
    assert "input      x:0 [-1, 8, 8, 3] float32" in text


def test_inspect_frozen_graph(capsys, tf1_fixtures):
    _, exp = tf1_fixtures
    info = _inspect_json(capsys, exp["frozen"]["path"])
    assert info["format"] == "tf1-frozen"
    assert info["ops"] == _tf_ops(exp["frozen"]["graph"])
    assert [o["name"] for o in info["outputs"]] == ["prob:0"]
    assert main(["inspect", exp["frozen"]["path"]]) == 0
    text = capsys.readouterr().out
    assert "output     prob:0" in text and "input      input:0 [-1, -1, -1, 3] float32" in text
    assert any(line.split()[:2] == ["Const", str(info["ops"]["Const"])]
               for line in text.splitlines())


def test_inspect_bare_checkpoint_without_metagraph(capsys, tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    prefix = Path(exp["sharded"]["prefix"]) if "prefix" in exp["sharded"] else None
    if prefix is None:
        pytest.skip(f"no sharded fixture: {exp['sharded']['error']}")
    for f in prefix.parent.glob(f"{prefix.name}.*"):
        if f.suffix != ".meta":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    info = _inspect_json(capsys, tmp_path / prefix.name)
    assert info["ops"] == {} and info["tensor_count"] == len(exp["sharded"]["tensors"])
    assert main(["inspect", str(tmp_path / prefix.name)]) == 0


def test_op_histogram_columns_align_and_keep_every_op():
    ops = {"Const": 276, "Identity": 142, "BroadcastGradientArgs": 9, "Softmax": 1}
    lines = op_histogram_lines(ops, width=60)
    cells = " ".join(lines).split()
    assert dict(zip(cells[::2], map(int, cells[1::2]))) == ops
    assert all(len(line) <= 60 for line in lines)


def test_inspect_quantized_and_placeholderless_graphs(capsys, tf1_fixtures):
    _, exp = tf1_fixtures
    info = _inspect_json(capsys, exp["quant"]["path"])
    assert info["ops"] == _tf_ops(exp["quant"]["graph"]) and info["ops"]["Dequantize"] == 3
    dtypes = {t["name"]: t["dtype"] for t in info["tensors"]}
    assert {n: dtypes[n] for n in exp["quant"]["quantized"]} == {
        n: v.dtype.names[0] for n, v in exp["quant"]["quantized"].items()}  # quint8 / qint8
    info = _inspect_json(capsys, exp["inner"]["path"])
    assert info["inputs"] == [] and info["outputs"] == [{"name": "scores:0"}]
    assert info["ops"] == _tf_ops(exp["inner"]["graph"])
